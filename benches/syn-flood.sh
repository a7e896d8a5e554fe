#!/usr/bin/env bash
# A random-source SYN flood, file → alerts: `normwatch run` over a generated capture in which
# every packet is a SYN from a new forged source to one protected web server (10 000 000 SYNs
# at 1 000 000 a second by default; `cargo run -p normwatch-benches --example syn-flood-pcap`
# writes the same file every time). Two runs: every SYN a flow of its own
# (`sensor.aggregate_attempts_above = 0`, the behaviour before the compact path) and the
# default (10 000), each timed with /usr/bin/time -v.
#
# Reported per run: packets per second of wall time (file → flow table → bus → detector →
# alerts, one process), peak RSS, flow records handed to the bus (the pipeline's own counter
# `normwatch_sensor_published_records_total`) per second of flood (event time), and the
# syn_flood alert's figures (peak packets/s, bytes/s, new attempts/s, distinct sources,
# spoofing verdict, half-open share), which must be the same in both runs.
#
#   benches/syn-flood.sh [PACKETS] [PPS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PACKETS=${1:-10000000}
PPS=${2:-1000000}
BIN=${NORMWATCH:-$ROOT/target/release/normwatch}
GEN=$ROOT/target/release/examples/syn-flood-pcap
if [ -z "${NORMWATCH:-}" ]; then
  cargo build --release -q -p normwatch-cli --bins
fi
cargo build --release -q -p normwatch-benches --example syn-flood-pcap
WORK=$(mktemp -d /tmp/nw-synflood.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

"$GEN" "$WORK/flood.pcap" "$PACKETS" "$PPS"
ls -l "$WORK/flood.pcap" >&2
SECS=$(python3 -c "print($PACKETS / $PPS)")

metric() { # file name
  awk -v n="$2" '$1 ~ "^"n"({|$)" { s += $2 } END { printf "%d", s }' "$1"
}

echo "syn-flood: $(date -u +%FT%TZ), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "$PACKETS SYNs at $PPS a second ($SECS s of flood), every one from a new source"
echo
echo "| aggregate_attempts_above | packets/s | peak RSS | records to the bus | records/s of flood | alert: pps, bit/s, new/s | sources | spoofed | half-open |"
echo "|---|---|---|---|---|---|---|---|---|"
for above in 0 10000; do
  cat > "$WORK/c.toml" <<TOML
[sensor]
id = "syn-flood-bench"
aggregate_attempts_above = $above

[[asset]]
id = "web"
name = "Public web server"
operator = "Example operator"
sector = "energy"
service = "customer portal"
cidrs = ["198.51.100.10/32"]

[asset.thresholds]
pps = 50000
bps = 200000000
new_flows_per_s = 2000
TOML
  /usr/bin/time -v "$BIN" run --config "$WORK/c.toml" --pcap "$WORK/flood.pcap" \
    --metrics-listen off --stats --alerts-out "$WORK/alerts.jsonl" \
    >/dev/null 2> "$WORK/err.txt"
  python3 - "$above" "$PACKETS" "$SECS" "$WORK/err.txt" "$WORK/alerts.jsonl" \
    "$(metric "$WORK/err.txt" normwatch_sensor_published_records_total)" <<'PY'
import json, sys
above, packets, secs, err, alerts, records = sys.argv[1:7]
packets, secs, records = int(packets), float(secs), int(records)
text = open(err).read()
def tv(label):
    line = next(l for l in text.splitlines() if label in l)
    return line.rsplit(": ", 1)[1].strip()
wall = tv("Elapsed (wall clock) time")
parts = [float(p) for p in wall.split(":")]
seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
rss_mb = int(tv("Maximum resident set size")) / 1024
floods = [a for a in map(json.loads, open(alerts)) if a["kind"] == "syn_flood"]
opened = sum(1 for a in floods if a["state"] == "open")
last = floods[-1] if floods else None
if last:
    m, sp = last["measured"], last.get("spoofing") or {}
    fig = f"{m['pps']:,.0f}, {m['bps']:,.0f}, {m['new_flows_per_s']:,.0f}"
    src = f"{last.get('sources_total', 0):,}"
    spoofed = str(sp.get("likely_spoofed"))
    half = sp.get("one_packet_half_open_share")
    half = "-" if half is None else f"{half:.3f}"
else:
    fig, src, spoofed, half = "no syn_flood alert", "-", "-", "-"
print(f"| {above} | {packets / seconds:,.0f} | {rss_mb:,.0f} MB | {records:,} | {records / secs:,.0f} | {fig} ({opened} opened) | {src} | {spoofed} | {half} |")
PY
done
