#!/usr/bin/env bash
# The test command: installs what the tests need on a Debian machine (each step skipped when
# already present), then runs every test: the evidence validators, then `cargo test --workspace`.
#
# Usage: scripts/test.sh              install what is missing, then run the tests
#        scripts/test.sh --install    only install what is missing
#
# Installs: Debian packages (iproute2 and tcpreplay for the live-capture test; softflowd,
# pmacct, nfdump, argus and tshark, the peer tools of the interop tests and benches;
# prometheus and promtool for the dashboards test; a C toolchain, pkg-config and the OpenSSL
# and zlib headers to build librdkafka), tansu (the Kafka-protocol broker the transport tests
# start on loopback ports; a long build, once per machine), and the Python virtualenv of
# tests/evidence/check.sh (the OASIS validators and medallion, the TAXII 2.1 server of the
# delivery test). The tests read the captures in ../shared/data beside this repository.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive

log() { printf '\n== %s\n' "$*"; }

# apt_need COMMAND PACKAGE: queue PACKAGE when COMMAND is not on the PATH.
need=()
apt_need() { command -v "$1" >/dev/null 2>&1 || need+=("$2"); }
# dpkg_need PACKAGE: queue PACKAGE when it is not installed (libraries, headers).
dpkg_need() { dpkg -s "$1" >/dev/null 2>&1 || need+=("$1"); }

apt_need ip iproute2
apt_need tcpreplay tcpreplay
apt_need softflowd softflowd
apt_need argus argus-server
apt_need ra argus-client
apt_need pmacctd pmacct
apt_need capinfos tshark
apt_need nfcapd nfdump
apt_need prometheus prometheus
apt_need promtool prometheus
apt_need cc build-essential
apt_need make make
apt_need pkg-config pkg-config
apt_need openssl openssl
apt_need python3 python3
dpkg_need python3-venv
dpkg_need libssl-dev
dpkg_need zlib1g-dev
if [ ${#need[@]} -gt 0 ]; then
    mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
    log "apt-get install ${need[*]}"
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v tansu >/dev/null 2>&1; then
    log "cargo install tansu"
    cargo install tansu --locked --quiet --features dynostore,libsql
fi

if [ "${1:-}" = "--install" ]; then
    exit 0
fi

# check.sh first: it creates the virtualenv (once) whose medallion server the delivery test
# starts, and validates built packages with the reference Python tools.
log "tests/evidence/check.sh"
bash tests/evidence/check.sh
log "cargo test --workspace"
cargo test --workspace
