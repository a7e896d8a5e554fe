#!/usr/bin/env bash
# Soak of the distributed path: `normwatch sensor` -> tansu (loopback, in-memory storage) ->
# `normwatch detect`, sustained for minutes, sampled every second.
#
# A synthetic capture is written first (Python, standard library only): ASSETS protected /24s,
# FLOWS flows a second (event time) for SECS seconds, each flow a UDP request and its answer
# from its own client; every fifth asset is flooded for 10 s at its own time (so the detector
# raises and closes alerts while the stream goes on). The sensor reads it as fast as it can
# (repeated LOOPS times as separate runs, one sensor after the other, so the stream lasts);
# one detector consumes it at the same time.
#
# Every second: records the sensor published, records the detector took in, the detector's
# consumer lag (messages), and the RSS of the sensor, the detector and the broker. Printed as
# a table (soak.tsv in WORK) and summed up: end-to-end flows/s (records consumed over the
# time from the first publish to the last record consumed), the peak lag, the peak RSS, the
# sensor's own rate (records over the wall time of its runs), and the CPU time (user +
# system) the sensor, the broker and the detector each spent per record.
#
# Then a catch-up: a detector of a new group reads everything the topic retained, as a member
# does after an outage or a rebalance (sampled every half second): the rate at which the
# consuming side alone takes in records.
#
#   benches/soak-kafka.sh                 # ASSETS=64 FLOWS=20000 SECS=60 LOOPS=20
#   NORMWATCH=target/release/normwatch benches/soak-kafka.sh
#
# Needs tansu and python3 on the PATH. Bounded: each sensor run reads the capture once, the
# detector stops 10 s after the last record, the broker is killed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
ASSETS=${ASSETS:-64}
FLOWS=${FLOWS:-20000}
SECS=${SECS:-60}
LOOPS=${LOOPS:-20}
NORMWATCH=${NORMWATCH:-$ROOT/target/release/normwatch}
WORK=${WORK:-$(mktemp -d /tmp/nw-soak.XXXXXX)}
PORT=${PORT:-19192}
DETECT_METRICS=${DETECT_METRICS:-127.0.0.1:19464}
SENSOR_METRICS=${SENSOR_METRICS:-127.0.0.1:19465}

command -v tansu >/dev/null || { echo "soak-kafka.sh: tansu not on the PATH" >&2; exit 2; }
command -v python3 >/dev/null || { echo "soak-kafka.sh: python3 needed" >&2; exit 2; }
[ -x "$NORMWATCH" ] || { echo "soak-kafka.sh: $NORMWATCH not built (cargo build --release -p normwatch-cli)" >&2; exit 2; }
mkdir -p "$WORK"

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

echo "writing the capture: $ASSETS assets, $FLOWS flows/s for $SECS s" >&2
python3 - "$WORK/soak.pcap" "$ASSETS" "$FLOWS" "$SECS" <<'PY'
import struct, sys
path, assets, flows, secs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
T0 = 1_768_464_000
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF
def frame(src, sport, dst, dport, payload):
    udp = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, src, dst)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00" + ip + udp
out = open(path, "wb")
out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
def pkt(ts_ns, f):
    out.write(struct.pack("<IIII", ts_ns // 10**9, (ts_ns % 10**9) // 1000, len(f), len(f)) + f)
req, ans = b"q" * 40, b"a" * 200
n = 0
for sec in range(secs):
    flooded = [a for a in range(assets) if a % 5 == 0 and (a * 7) % max(secs - 10, 1) <= sec < (a * 7) % max(secs - 10, 1) + 10]
    for i in range(flows):
        a = i % assets
        t = (T0 + sec) * 10**9 + i * (10**9 // flows)
        server = bytes([10, 30 + a // 256, a % 256, 10])
        n += 1
        client = bytes([198, 18 + (n >> 24) % 2, (n >> 16) & 255, (n >> 8) & 255])
        cport = 1024 + n % 60000
        pkt(t, frame(client, cport, server, 53, req))
        pkt(t + 200_000, frame(server, 53, client, cport, ans))
    for a in flooded:
        server = bytes([10, 30 + a // 256, a % 256, 10])
        for i in range(3000):
            t = (T0 + sec) * 10**9 + i * (10**9 // 3000) + 1
            src = bytes([89, 160, 20, 128 + i % 127])
            pkt(t, frame(src, 53, server, 4000 + i % 50000, ans))
out.close()
PY

cat > "$WORK/normwatch.toml" <<EOF
[sensor]
id = "soak"
[bus]
kind = "kafka"
brokers = "127.0.0.1:$PORT"
[bus.topics.flows]
partitions = 8
[kafka]
group_id = "soak"
[spool]
path = "$WORK/spool"
[telemetry]
metrics_listen = "$DETECT_METRICS"
EOF
for ((a = 0; a < ASSETS; a++)); do
  cat >> "$WORK/normwatch.toml" <<EOF
[[asset]]
id = "soak-$a"
name = "Soak $a"
operator = "Example operator"
sector = "energy"
service = "resolver $a"
cidrs = ["10.$((30 + a / 256)).$((a % 256)).0/24"]
[asset.thresholds]
pps = 2000
EOF
done
sed "s|metrics_listen = \"$DETECT_METRICS\"|metrics_listen = \"$SENSOR_METRICS\"|" "$WORK/normwatch.toml" > "$WORK/sensor.toml"

mkdir -p "$WORK/tansu"
(cd "$WORK/tansu" && exec tansu broker --listener-url "tcp://127.0.0.1:$PORT" \
  --advertised-listener-url "tcp://127.0.0.1:$PORT" --storage-engine memory://tansu/) \
  > "$WORK/tansu.log" 2>&1 &
broker=$!
pids+=("$broker")
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done

rss() { awk '/VmRSS/ {print int($2 / 1024)}' "/proc/$1/status" 2>/dev/null || echo 0; }
# CPU seconds (user + system) a process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null; }
metric() { { curl -s "http://$1/metrics" 2>/dev/null || true; } | awk -v m="$2" '$1 ~ "^"m {s += $NF} END {printf "%d", s}'; }

"$NORMWATCH" detect --config "$WORK/normwatch.toml" --exit-when-idle 10s --stats \
  2> "$WORK/detect.log" &
detect=$!
pids+=("$detect")
sleep 3
start=$(date +%s.%N)
(
  s0=$(date +%s.%N)
  TIMEFORMAT='%U %S'
  for ((l = 0; l < LOOPS; l++)); do
    { time "$NORMWATCH" sensor --config "$WORK/sensor.toml" --stats --pcap "$WORK/soak.pcap" \
      2>> "$WORK/sensor.log"; } 2>> "$WORK/sensor.cpu"
  done
  echo "$(date +%s.%N) - $s0" | bc > "$WORK/sensor.seconds"
) &
sensors=$!
pids+=("$sensors")

printf 't_s\tpublished\tconsumed\tlag_msgs\tsensor_rss_mb\tdetect_rss_mb\tbroker_rss_mb\n' > "$WORK/soak.tsv"
while kill -0 "$detect" 2>/dev/null; do
  now=$(date +%s.%N)
  # Finished sensor runs printed their totals; the running one is read live.
  done_published=$({ grep -o '^normwatch_sensor_published_records_total [0-9]*' "$WORK/sensor.log" 2>/dev/null || true; } \
    | awk '{s += $2} END {print s + 0}')
  sensor_pid=$(pgrep -n -P "$sensors" || true)
  srss=0
  published=$done_published
  if [ -n "$sensor_pid" ]; then
    p=$(metric "$SENSOR_METRICS" normwatch_sensor_published_records_total)
    published=$((done_published + ${p:-0}))
    srss=$(rss "$sensor_pid")
  fi
  c=$(metric "$DETECT_METRICS" normwatch_detect_flow_records_total)
  lag=$(metric "$DETECT_METRICS" normwatch_transport_consumer_lag_messages)
  printf '%.1f\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(echo "$now - $start" | bc)" "$published" "${c:-0}" \
    "${lag:-0}" "$srss" "$(rss "$detect")" "$(rss "$broker")" >> "$WORK/soak.tsv"
  dcpu=$(cpu "$detect" || echo "$dcpu")
  bcpu=$(cpu "$broker")
  sleep 1
done
wait "$sensors" || true
column -t "$WORK/soak.tsv"
total=$({ grep -o '^normwatch_detect_flow_records_total [0-9]*' "$WORK/detect.log" || true; } | awk '{s += $2} END {print s + 0}')
last=$(awk -F'\t' -v n="$total" 'NR > 1 && $3 >= n {print $1; exit}' "$WORK/soak.tsv")
echo
echo "records consumed: $total in ${last:-?} s from the first publish"
[ -n "$last" ] && echo "end to end: $(echo "$total / $last" | bc) flows/s"
echo "peak lag (messages): $(awk -F'\t' 'NR > 1 && $4 > m {m = $4} END {print m + 0}' "$WORK/soak.tsv")"
for col in 5 6 7; do
  echo "peak RSS $(head -1 "$WORK/soak.tsv" | cut -f$col): $(awk -F'\t' -v c=$col 'NR > 1 && $c > m {m = $c} END {print m + 0}' "$WORK/soak.tsv")"
done
published=$({ grep -o '^normwatch_sensor_published_records_total [0-9]*' "$WORK/sensor.log" || true; } | awk '{s += $2} END {print s + 0}')
echo "sensor alone: $published records in $(cat "$WORK/sensor.seconds") s: $(echo "$published / $(cat "$WORK/sensor.seconds")" | bc) records/s"
# Where the two cores went: CPU time (user + system) of each process per record.
scpu=$(awk '{s += $1 + $2} END {printf "%.2f", s}' "$WORK/sensor.cpu")
if [ "$total" -gt 0 ]; then
  for p in "sensor $scpu" "broker ${bcpu:-0}" "detector ${dcpu:-0}"; do
    set -- $p
    echo "CPU $1: $2 s, $(echo "scale=3; $2 * 1000000 / $total" | bc) µs a record"
  done
fi

sed 's/^group_id = "soak"/group_id = "soak-catchup"/' "$WORK/normwatch.toml" > "$WORK/catchup.toml"
"$NORMWATCH" detect --config "$WORK/catchup.toml" --exit-when-idle 5s --stats 2> "$WORK/catchup.log" &
catchup=$!
pids+=("$catchup")
cstart=$(date +%s.%N)
caught=
while kill -0 "$catchup" 2>/dev/null; do
  c=$(metric "$DETECT_METRICS" normwatch_detect_flow_records_total)
  if [ -z "$caught" ] && [ "${c:-0}" -ge "$total" ]; then caught=$(echo "$(date +%s.%N) - $cstart" | bc); fi
  sleep 0.5
done
[ -n "$caught" ] && echo "catch-up: $total records in $caught s (from the detector's start): $(echo "$total / $caught" | bc) records/s"
echo "work directory: $WORK"
