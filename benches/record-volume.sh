#!/usr/bin/env bash
# What interim reports cost on the bus: flow records and encoded bytes the sensor hands the
# transport per second of traffic, with `sensor.report_interval` off ("0s": a record when a
# flow ends) and at the default (100 ms), for busy benign captures and a flood.
#
# Each capture goes through `normwatch run` (file → flow table → batcher → in-process bus →
# detector); the figures are the transport's own counters (`normwatch_sensor_flow_records_total`,
# `normwatch_transport_produced_bytes_total`, batches encoded and compressed as they would go to
# Kafka) divided by the capture's duration (event time), so they are what a sensor on that link
# would send per second, whatever the replay speed.
#
#   benches/record-volume.sh [CAPTURE...]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
DATA=$ROOT/../shared/data/captures
BIN=${NORMWATCH:-$ROOT/target/release/normwatch}
[ -n "${NORMWATCH:-}" ] || cargo build --release -q -p normwatch-cli
command -v capinfos >/dev/null || { echo "record-volume.sh: needs capinfos (Debian's tshark)" >&2; exit 2; }
WORK=$(mktemp -d /tmp/nw-volume.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

"$BIN" simulate -s modbus-write -o "$WORK/background.pcap" >/dev/null
if [ $# -gt 0 ]; then
  captures=("$@")
else
  captures=(
    "$WORK/background.pcap"
    "$DATA/ICS-Security-Tools/pcaps/ModbusTCP/ModbusTCP.pcap"
    "$DATA/ICS-Security-Tools/pcaps/EthernetIP/EthernetIP-CIP.pcap"
    "$DATA/packet-captures/pkt.TCP.synflood.spoofed.pcap"
  )
fi

metric() { # file name
  awk -v n="$2" '$1 ~ "^"n"({|$)" { s += $2 } END { printf "%d", s }' "$1"
}

echo "record-volume: $(date -u +%FT%TZ), $(nproc) cores"
echo
echo "| capture | seconds | flows | records/s, reports off | records/s, every 100 ms | bytes/s off | bytes/s 100 ms |"
echo "|---|---|---|---|---|---|---|"
for c in "${captures[@]}"; do
  secs=$(capinfos -u -M "$c" | awk -F': *' '/Capture duration/ { print $2 + 0 }')
  row=()
  for interval in 0s 100ms; do
    printf '[sensor]\nid = "volume"\nreport_interval = "%s"\n' "$interval" > "$WORK/c.toml"
    "$BIN" run --config "$WORK/c.toml" --pcap "$c" --metrics-listen off --stats \
      >/dev/null 2> "$WORK/m.txt"
    row+=("$(metric "$WORK/m.txt" normwatch_sensor_flow_records_total)" \
          "$(metric "$WORK/m.txt" normwatch_transport_produced_bytes_total)")
  done
  python3 - "$(basename "$c")" "$secs" "${row[@]}" <<'EOF'
import sys
name, secs = sys.argv[1], max(float(sys.argv[2]), 1e-9)
r0, b0, r1, b1 = (int(x) for x in sys.argv[3:7])
print(f"| {name} | {secs:.0f} | {r0} | {r0/secs:,.0f} | {r1/secs:,.0f} ({r1/max(r0,1):.1f}×) | {b0/secs:,.0f} | {b1/secs:,.0f} ({b1/max(b0,1):.1f}×) |")
EOF
done
