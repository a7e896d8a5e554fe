#!/usr/bin/env bash
# Independent validation of normwatch evidence packages with the reference Python tools:
# stix2-validator and stix2.parse on every STIX bundle, deterministic SCO ids recomputed by the
# stix2 library, the DSSE signature verified by securesystemslib, the attribution compared with
# the Python maxminddb reader. The same virtualenv provides medallion, the TAXII 2.1 server the
# Rust delivery test (crates/evidence/tests/evidence/delivery.rs) starts on loopback.
#
# Usage: tests/evidence/check.sh
#            builds the sample packages (cargo example write_sample) and the packages of
#            `normwatch demo` (a simulated attack capture through every stage) and checks them
#        tests/evidence/check.sh --key PUB [--geoip DIR] PACKAGE_DIR...
#            checks package directories already written
# Env:   NORMWATCH_PYENV  virtualenv location (default: <target dir>/pyenv)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="${NORMWATCH_PYENV:-$target/pyenv}"
requirements="$root/tests/evidence/requirements.txt"
stamp="$venv/.normwatch-requirements"

# Create or refresh the virtualenv only when the pinned requirements changed.
if [[ ! -x "$venv/bin/python" ]]; then
    python3 -m venv "$venv"
fi
if ! cmp -s "$requirements" "$stamp" 2>/dev/null; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$stamp"
fi

if [[ $# -gt 0 ]]; then
    exec "$venv/bin/python" "$root/tests/evidence/check_package.py" "$@"
else
    out="$target/evidence-check"
    rm -rf "$out"
    (cd "$root" && cargo run --quiet -p normwatch-evidence --example write_sample -- \
        "$out" "$root/../shared/data/geoip" "$root/config/norms.toml")
    dirs=()
    for d in "$out"/EP-*; do
        [[ -d "$d" ]] && dirs+=("$d")
    done
    "$venv/bin/python" "$root/tests/evidence/check_package.py" \
        --key "$out/signer.pub" --geoip "$root/../shared/data/geoip" "${dirs[@]}"

    # Packages the whole pipeline builds from a simulated attack capture (SYN flood, DNS
    # amplification, Modbus write, S7 STOP): capture, flows, detector, evidence stage.
    demo="$target/evidence-demo"
    rm -rf "$demo"
    (cd "$root" && cargo run --quiet -p normwatch-cli -- demo -o "$demo" --metrics-listen off >/dev/null)
    dirs=()
    for d in "$demo"/evidence/packages/EP-*; do
        [[ -d "$d" ]] && dirs+=("$d")
    done
    [[ ${#dirs[@]} -gt 0 ]] || { echo "normwatch demo wrote no evidence package" >&2; exit 1; }
    exec "$venv/bin/python" "$root/tests/evidence/check_package.py" \
        --key "$demo/signing.key.pub" --geoip "$demo/geoip" "${dirs[@]}"
fi
