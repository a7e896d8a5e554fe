#!/usr/bin/env bash
# Wall-clock alert latency on a live link: normwatch beside FastNetMon, both on the same veth,
# in one run.
#
# The lab: a network namespace with a veth pair (10.200.0.1/30 outside, 10.200.0.2/30 inside,
# no route anywhere else); the monitored end is inside, in promiscuous mode. The shared spoofed
# SYN flood (pkt.TCP.synflood.spoofed.pcap) is rewritten so that its victim is 10.200.0.2 and
# its sources fall in 198.18.0.0/15 (unrouted), then replayed into the outside end with
# tcpreplay at RATE packets/s. `normwatch run --interface` (the victim a /32 asset with
# `[asset.thresholds] pps` = RATE / multiple) and Debian's FastNetMon (mirror AF_PACKET,
# `threshold_pps` the same) watch the inside end. Time zero is the kernel timestamp of the
# first attack packet on the monitored end (dumpcap -c 1); a tool's time is the wall clock
# when it reported: normwatch's first alert line on standard output, FastNetMon's first call
# of its notify script with "ban". Each run starts after 3 s plus a random fraction of a
# second, so runs fall at random phases of either tool's clock.
#
# Then the industrial case: `normwatch simulate -s s7-stop-held` (an S7 session held open,
# polled every second, a PLC STOP 20 s in) replayed at its own timing; time zero is the STOP
# packet's time on the wire (the first packet's kernel timestamp plus the STOP's offset in the
# capture). FastNetMon has no industrial rule, so only normwatch is timed.
#
# With KAFKA=1 (the default when `tansu` is on the PATH) every row is also measured through
# the distributed path: `normwatch sensor --interface` -> a tansu broker on the namespace's
# loopback (in-memory storage, a fresh one per run) -> `normwatch detect`, its first alert line
# timed the same way (FastNetMon's column is not repeated there).
#
# Prints a table of medians (every run's figure after it). Needs root (namespaces, raw
# sockets); installs tcpreplay, tshark, iproute2 and fastnetmon from Debian when missing.
#
#   sudo benches/live-latency.sh            # RUNS=3 RATE=1600 MULTIPLES="1.1 2 5"
#
# The namespace and veth pair it creates are deleted at exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${RUNS:-3}
RATE=${RATE:-1600}
MULTIPLES=${MULTIPLES:-"1.1 2 5"}
OWN_THRESHOLD=${OWN_THRESHOLD:-800}
WAIT=${WAIT:-30}
SYN=${SYN:-$ROOT/../shared/data/captures/packet-captures/pkt.TCP.synflood.spoofed.pcap}
if [ -z "${KAFKA:-}" ]; then
  KAFKA=0
  command -v tansu >/dev/null 2>&1 && KAFKA=1
fi
KAFKA_PORT=19092

[ "$(id -u)" = 0 ] || { echo "live-latency.sh: needs root (network namespaces, capture)" >&2; exit 2; }
[ -f "$SYN" ] || { echo "live-latency.sh: $SYN not found (../shared/data beside the repository)" >&2; exit 2; }

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v tcpreplay >/dev/null || need+=(tcpreplay)
command -v tcprewrite >/dev/null || need+=(tcpreplay)
command -v dumpcap >/dev/null || need+=(tshark)
command -v fastnetmon >/dev/null || need+=(fastnetmon)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi

BIN=${NORMWATCH:-$ROOT/target/release/normwatch}
if [ -z "${NORMWATCH:-}" ]; then
  cargo build --release -q -p normwatch-cli
fi
FNM_VERSION=$(dpkg-query -W -f='${Version}' fastnetmon 2>/dev/null || echo unknown)

NS=nwlat$$
OUT=nwla$$
IN=nwlb$$
WORK=$(mktemp -d /tmp/nw-latency.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  ip link del "$OUT" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ip netns add "$NS"
ip link add "$OUT" type veth peer name "$IN"
ip link set "$IN" netns "$NS"
# No IPv6 on the lab link: its neighbour discovery would be the first packet on the wire.
sysctl -qw "net.ipv6.conf.$OUT.disable_ipv6=1" || true
ip netns exec "$NS" sysctl -qw "net.ipv6.conf.$IN.disable_ipv6=1" || true
ip addr add 10.200.0.1/30 dev "$OUT"
ip link set "$OUT" up
ip -n "$NS" addr add 10.200.0.2/30 dev "$IN"
ip -n "$NS" link set "$IN" up promisc on
ip -n "$NS" link set lo up
# Offloads would hand the capture merged or unchecksummed frames.
ip netns exec "$NS" ethtool -K "$IN" gro off gso off tso off >/dev/null 2>&1 || true

# The attack, aimed at the lab's victim from unrouted sources.
tcprewrite --infile="$SYN" --outfile="$WORK/attack.pcap" \
  --dstipmap=0.0.0.0/0:10.200.0.2/32 --srcipmap=0.0.0.0/0:198.18.0.0/15 --fixcsum

# A timestamping reader: each line of standard input, prefixed by the wall clock.
cat > "$WORK/stamp.py" <<'EOF'
import sys, time
for line in sys.stdin:
    sys.stdout.write(f"{time.time():.6f} {line}")
    sys.stdout.flush()
EOF

nw_config() { # threshold asset-cidr kafka(0/1)
  local bus=""
  if [ "$3" = 1 ]; then
    bus=$(printf '[bus]\nkind = "kafka"\nbrokers = "127.0.0.1:%s"\n[kafka]\ngroup_id = "latency-lab"\n[spool]\npath = "%s"\n' "$KAFKA_PORT" "$WORK/spool")
  fi
  cat > "$WORK/nw.toml" <<EOF
[sensor]
id = "latency-lab"
$bus
[[asset]]
id = "victim"
name = "Lab victim"
operator = "Lab"
sector = "health"
service = "the lab's service"
cidrs = ["$2"]
roles = ["ot"]
[asset.thresholds]
pps = $1
EOF
}

fnm_config() { # threshold
  mkdir -p "$WORK/fnm"
  echo "10.200.0.0/30" > "$WORK/fnm/networks"
  : > "$WORK/fnm/whitelist"
  cat > "$WORK/fnm/notify.sh" <<EOF
#!/bin/sh
echo "\$(date +%s.%N) \$*" >> "$WORK/fnm/events"
EOF
  chmod +x "$WORK/fnm/notify.sh"
  cat > "$WORK/fnm/fastnetmon.conf" <<EOF
logging_level = info
disable_usage_report = on
enable_ban = on
ban_time = 60
unban_only_if_attack_finished = on
process_incoming_traffic = on
process_outgoing_traffic = on
networks_list_path = $WORK/fnm/networks
white_list_path = $WORK/fnm/whitelist
monitor_local_ip_addresses = off
enable_connection_tracking = on
ban_for_pps = on
ban_for_bandwidth = on
ban_for_flows = off
threshold_pps = $1
threshold_mbps = 1000
mirror_afpacket = on
interfaces = $IN
mirror_af_packet_fanout_mode = cpu
mirror_af_packet_custom_sampling_rate = 1
average_calculation_time = 5
speed_calculation_delay = 1
notify_script_path = $WORK/fnm/notify.sh
collect_attack_pcap_dumps = off
prometheus = off
enable_api = off
pid_path = $WORK/fnm/fastnetmon.pid
cli_stats_file_path = $WORK/fnm/stats
cli_stats_ipv6_file_path = $WORK/fnm/stats6
EOF
}

wait_for() { # file pattern seconds
  local end=$((SECONDS + $3))
  while [ $SECONDS -lt $end ]; do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  local end=$((SECONDS + 10)) alive
  while [ $SECONDS -lt $end ]; do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}

# One run: prints "<normwatch s> <fastnetmon s>" (or "-" for a tool that did not report).
# Arguments: capture, threshold, tcpreplay rate option, with FastNetMon (1/0), the STOP offset
# (s) for the industrial case, else 0.
one_run() {
  local pcap=$1 threshold=$2 rateopt=$3 with_fnm=$4 offset=$5 kafka=${6:-0} cidr
  cidr="10.200.0.2/32"
  [ "$offset" != 0 ] && cidr="10.20.0.50/32"
  nw_config "$threshold" "$cidr" "$kafka"
  rm -f "$WORK"/nw.out "$WORK"/nw.err "$WORK"/first.pcap "$WORK"/dumpcap.err "$WORK"/sensor.err
  rm -rf "$WORK/fnm" "$WORK/spool" "$WORK/tansu"
  if [ "$with_fnm" = 1 ]; then
    fnm_config "$threshold"
    mkdir -p "$WORK/fnm/attacks"
    # FastNetMon writes attack details to a compiled-in folder: a private mount keeps the
    # host clean.
    ip netns exec "$NS" unshare -m sh -c "mkdir -p /var/log/fastnetmon_attacks && mount --bind '$WORK/fnm/attacks' /var/log/fastnetmon_attacks && exec fastnetmon --configuration_file '$WORK/fnm/fastnetmon.conf' --log_to_console --disable_pid_logic" \
      > "$WORK/fnm/log" 2>&1 &
    pids+=($!)
    wait_for "$WORK/fnm/log" AF_PACKET 30 || { echo "fastnetmon did not start:" >&2; tail -5 "$WORK/fnm/log" >&2; exit 1; }
  fi
  rm -f "$WORK/nw.fifo"
  mkfifo "$WORK/nw.fifo"
  python3 -u "$WORK/stamp.py" < "$WORK/nw.fifo" > "$WORK/nw.out" &
  pids+=($!)
  if [ "$kafka" = 1 ]; then
    # A fresh broker (in-memory storage) on the namespace's loopback; the sensor creates the
    # topics, then the detector joins its group.
    mkdir -p "$WORK/tansu"
    (cd "$WORK/tansu" && exec ip netns exec "$NS" tansu broker \
      --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
      --storage-engine memory://tansu/) > "$WORK/tansu.log" 2>&1 &
    pids+=($!)
    local up=0
    for _ in $(seq 100); do
      if ip netns exec "$NS" bash -c "echo > /dev/tcp/127.0.0.1/$KAFKA_PORT" 2>/dev/null; then
        up=1
        break
      fi
      sleep 0.1
    done
    [ $up = 1 ] || { echo "tansu did not start:" >&2; tail -5 "$WORK/tansu.log" >&2; exit 1; }
    ip netns exec "$NS" "$BIN" sensor --config "$WORK/nw.toml" --interface "$IN" \
      --metrics-listen off 2> "$WORK/sensor.err" &
    pids+=($!)
    wait_for "$WORK/sensor.err" capturing 30 || { echo "normwatch sensor did not start:" >&2; tail -5 "$WORK/sensor.err" >&2; exit 1; }
    ip netns exec "$NS" "$BIN" detect --config "$WORK/nw.toml" --alerts-out - \
      --metrics-listen off > "$WORK/nw.fifo" 2> "$WORK/nw.err" &
    pids+=($!)
    # The consumer group's first assignment takes a few seconds.
    sleep 6
  else
    ip netns exec "$NS" "$BIN" run --config "$WORK/nw.toml" --interface "$IN" --alerts-out - \
      --metrics-listen off > "$WORK/nw.fifo" 2> "$WORK/nw.err" &
    pids+=($!)
    wait_for "$WORK/nw.err" capturing 30 || { echo "normwatch did not start:" >&2; tail -5 "$WORK/nw.err" >&2; exit 1; }
  fi
  # Time zero: the first replayed packet (IPv4; the flood's are all to the victim).
  ip netns exec "$NS" dumpcap -q -i "$IN" -c 1 -f "ip" -w "$WORK/first.pcap" 2> "$WORK/dumpcap.err" &
  pids+=($!)
  wait_for "$WORK/dumpcap.err" "Capturing on" 30 || true
  sleep "3.$(printf '%03d' $((RANDOM % 1000)))"
  # shellcheck disable=SC2086
  tcpreplay -q -i "$OUT" $rateopt "$pcap" >/dev/null 2>&1 &
  local replay=$!
  pids+=($replay)
  # The industrial case waits from its STOP packet, well into the capture.
  local end=$((SECONDS + WAIT + ${offset%.*})) nw="" fnm=""
  while [ $SECONDS -lt $end ]; do
    nw=$(grep -m1 '"state":"open"' "$WORK/nw.out" 2>/dev/null | cut -d' ' -f1 || true)
    [ "$with_fnm" = 1 ] && fnm=$(grep -m1 ' ban' "$WORK/fnm/events" 2>/dev/null | cut -d' ' -f1 || true)
    if [ -n "$nw" ] && { [ "$with_fnm" = 0 ] || [ -n "$fnm" ]; }; then break; fi
    sleep 0.1
  done
  stop_all
  local t0
  t0=$(tshark -r "$WORK/first.pcap" -T fields -e frame.time_epoch 2>/dev/null | head -1)
  [ -n "$t0" ] || { echo "no packet seen on the monitored end" >&2; exit 1; }
  t0=$(python3 -c "print(float('$t0') + float('$offset'))")
  python3 - "$t0" "$nw" "$fnm" <<'EOF'
import sys
t0 = float(sys.argv[1])
def d(x):
    return f"{float(x) - t0:.2f}" if x else "-"
print(d(sys.argv[2]), d(sys.argv[3]))
EOF
}

median() { python3 -c "
import statistics, sys
v = [float(x) for x in sys.argv[1:] if x != '-']
print(f'{statistics.median(v):.2f} s' if len(v) == len(sys.argv[1:]) and v else 'no alert in some runs')
" "$@"; }

row() { # label threshold rateopt
  local nws=() fnms=() kfs=() r
  for _ in $(seq "$RUNS"); do
    r=$(one_run "$WORK/attack.pcap" "$2" "$3" 1 0)
    nws+=("${r% *}")
    fnms+=("${r#* }")
    if [ "$KAFKA" = 1 ]; then
      r=$(one_run "$WORK/attack.pcap" "$2" "$3" 0 0 1)
      kfs+=("${r% *}")
    fi
  done
  local kafka_col=""
  [ "$KAFKA" = 1 ] && kafka_col=" $(median "${kfs[@]}") (${kfs[*]}) |"
  printf '| %s | %s (%s) | %s (%s) |%s\n' "$1" \
    "$(median "${fnms[@]}")" "${fnms[*]}" "$(median "${nws[@]}")" "${nws[*]}" "$kafka_col"
}

echo "live-latency: $(date -u +%FT%TZ), $(nproc) cores, $(uname -r); FastNetMon $FNM_VERSION; RATE=$RATE pps, $RUNS runs each"
echo
if [ "$KAFKA" = 1 ]; then
  echo "| threshold multiple | FastNetMon, median (runs) | normwatch run, median (runs) | normwatch sensor -> Kafka -> detect, median (runs) |"
  echo "|---|---|---|---|"
else
  echo "| threshold multiple | FastNetMon, median (runs) | normwatch, median (runs) |"
  echo "|---|---|---|"
fi
for m in $MULTIPLES; do
  threshold=$(python3 -c "print(round($RATE / $m))")
  row "${m}× (pps threshold $threshold)" "$threshold" "--pps=$RATE"
done
row "the capture at its own timing (threshold $OWN_THRESHOLD)" "$OWN_THRESHOLD" ""

# The industrial case: a PLC STOP inside a session that stays open.
"$BIN" simulate -s s7-stop-held -o "$WORK/s7.pcap" >/dev/null
first=$(tshark -r "$WORK/s7.pcap" -c 1 -T fields -e frame.time_epoch 2>/dev/null)
stop=$(tshark -r "$WORK/s7.pcap" -Y 'tcp.dstport == 102 && tcp.len > 17 && tcp.payload[17:1] == 29' -T fields -e frame.time_epoch 2>/dev/null | head -1)
offset=$(python3 -c "print(float('$stop') - float('$first'))")
nws=()
kfs=()
for _ in $(seq "$RUNS"); do
  r=$(one_run "$WORK/s7.pcap" 1000000 "" 0 "$offset")
  nws+=("${r% *}")
  if [ "$KAFKA" = 1 ]; then
    r=$(one_run "$WORK/s7.pcap" 1000000 "" 0 "$offset" 1)
    kfs+=("${r% *}")
  fi
done
kafka_col=""
[ "$KAFKA" = 1 ] && kafka_col=" $(median "${kfs[@]}") (${kfs[*]}) |"
printf '| PLC STOP inside a held S7 session (after the STOP packet) | no rule | %s (%s) |%s\n' \
  "$(median "${nws[@]}")" "${nws[*]}" "$kafka_col"
