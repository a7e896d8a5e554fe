#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (seconds, default 60 each), seeded with real
# captures from the shared data. A crash fails the run and leaves the input in fuzz/artifacts.
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-60}
shared=${NORMWATCH_SHARED_DATA:-../../shared/data}
# cargo-fuzz needs nightly-only flags; the stable toolchain accepts them with RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
mkdir -p corpus/capture_reader corpus/decode corpus/ics
for t in flowexport_netflow5 flowexport_netflow9 flowexport_ipfix flowexport_sflow; do mkdir -p "corpus/$t"; done
if [ -d "$shared/captures" ]; then
  mapfile -t seeds < <(find "$shared/captures" -type f \( -name '*.pcap' -o -name '*.pcapng' \) -size -64k | sort)
  i=0
  for f in "${seeds[@]:0:60}"; do
    cp "$f" "corpus/capture_reader/seed-$i"
    i=$((i + 1))
  done
fi
for t in decode capture_reader ics flowexport_netflow5 flowexport_netflow9 flowexport_ipfix flowexport_sflow; do
  echo "fuzzing $t for ${secs}s"
  # Debug assertions on: an arithmetic overflow is a finding too.
  cargo fuzz run --debug-assertions "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 2>&1 | tail -n 3
done
