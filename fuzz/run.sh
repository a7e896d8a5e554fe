#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (seconds, default 60 each), seeded with real
# captures from the shared data. A crash fails the run and leaves the input in fuzz/artifacts.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shared=${NORMWATCH_SHARED_DATA:-../../shared/data}
# cargo-fuzz needs nightly-only flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
mkdir -p corpus/capture_reader corpus/decode corpus/ics corpus/wire_flow
for t in flowexport_netflow5 flowexport_netflow9 flowexport_ipfix flowexport_sflow; do mkdir -p "corpus/$t"; done
if [ -d "$shared/captures" ]; then
  mapfile -t seeds < <(find "$shared/captures" -type f \( -name '*.pcap' -o -name '*.pcapng' \) -size -64k | sort)
  i=0
  for f in "${seeds[@]:0:60}"; do
    cp "$f" "corpus/capture_reader/seed-$i"
    i=$((i + 1))
  done
fi
# Flow-export seeds: the first datagrams real exporters send for a small capture (softflowd:
# NetFlow v5, v9, IPFIX; pmacctd's sfprobe: sFlow), so fuzzing starts from valid templates
# and samples. Skipped when the exporters are not installed.
seed_export() { # target, port, exporter command...
  local t=$1 port=$2; shift 2
  python3 - "$port" "corpus/$t" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.settimeout(5)
try:
    for i in range(16):
        open(f"{sys.argv[2]}/seed-{i}", "wb").write(s.recv(65535))
        s.settimeout(2)
except socket.timeout:
    pass
PY
  local rx=$!
  sleep 0.3
  timeout 30 "$@" >/dev/null 2>&1 || true
  wait "$rx" || true
}
seed_pcap=$shared/captures/zeek/testing/btest/Traces/wikipedia.pcap
if command -v softflowd >/dev/null && command -v python3 >/dev/null && [ -f "$seed_pcap" ]; then
  # softflowd cuts `-r` and control-socket paths longer than 16 characters.
  cp "$seed_pcap" /tmp/fz$$.pcap
  for tv in flowexport_netflow5:5 flowexport_netflow9:9 flowexport_ipfix:10; do
    seed_export "${tv%%:*}" 39871 sh -c "cd /tmp && softflowd -d -r fz$$.pcap -n 127.0.0.1:39871 -v ${tv##*:} -c /tmp/fc$$ -p /tmp/fp$$"
  done
  rm -f /tmp/fz$$.pcap
fi
if command -v pmacctd >/dev/null && command -v python3 >/dev/null && [ -f "$seed_pcap" ]; then
  printf 'daemonize: false\npcap_savefile: %s\nplugins: sfprobe\nsfprobe_receiver: 127.0.0.1:39872\nsfprobe_agentip: 127.0.0.1\n' \
    "$(realpath "$seed_pcap")" >/tmp/fz$$.conf
  seed_export flowexport_sflow 39872 pmacctd -f /tmp/fz$$.conf
  rm -f /tmp/fz$$.conf
fi
for t in decode capture_reader ics flowexport_netflow5 flowexport_netflow9 flowexport_ipfix flowexport_sflow wire_flow; do
  echo "fuzzing $t for ${secs}s"
  # Debug assertions on: an arithmetic overflow is a finding too.
  cargo fuzz run --debug-assertions "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 2>&1 | tail -n 3
done
