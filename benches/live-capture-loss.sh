#!/usr/bin/env bash
# Live-capture loss: how many packets each capture tool takes in of those a veth received.
#
# A SYN flood (20 time-shifted copies of the shared spoofed SYN flood, merged: ~757 k packets)
# is replayed with tcpreplay into one end of a veth pair inside a network namespace this script
# creates (and deletes, however it ends), at each rate in RATES and at tcpreplay's top speed.
# For each rate the tools capture the other end in turn: `normwatch flows --interface` and
# Debian's dumpcap (and FastNetMon, if installed, is reported as not measured). Printed per
# rate and tool: packets the veth received, packets the tool took in, packets lost, and the
# tool's CPU time (user + system, whole process lifetime) per packet taken in.
#
# Run as root. Installs tcpreplay and tshark (for dumpcap, editcap, mergecap) from Debian
# when they are missing.
#
#   benches/live-capture-loss.sh [NORMWATCH_BINARY]
#   ROUNDS=3 RATES="50000 100000 300000 1000000 top" benches/live-capture-loss.sh
#   NORMWATCH_CONFIG=capture.toml benches/live-capture-loss.sh   # e.g. another ring_size
#
# NORMWATCH_BINARY defaults to target/release/normwatch (build it with
# `cargo build --release -p normwatch-cli`).

set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
nw="${1:-$here/target/release/normwatch}"
rounds="${ROUNDS:-3}"
rates="${RATES:-50000 100000 300000 1000000 top}"
copies="${COPIES:-20}"
src="$here/../shared/data/captures/packet-captures/pkt.TCP.synflood.spoofed.pcap"

[ "$(id -u)" = 0 ] || { echo "run as root (namespaces, raw sockets)" >&2; exit 2; }
[ -x "$nw" ] || { echo "no normwatch binary at $nw" >&2; exit 2; }
[ -r "$src" ] || { echo "missing $src" >&2; exit 2; }

need=()
command -v tcpreplay >/dev/null || need+=(tcpreplay)
for t in dumpcap editcap mergecap; do
    command -v "$t" >/dev/null || { need+=(tshark); break; }
done
if [ "${#need[@]}" -gt 0 ]; then
    echo "installing ${need[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

ns="nwloss$$"
work="$(mktemp -d)"
cleanup() {
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The flood: COPIES copies of the capture, copy i shifted by i × 1.1 s so they interleave.
for i in $(seq 0 $((copies - 1))); do
    editcap -F pcap -t "$(awk -v i="$i" 'BEGIN { printf "%.3f", i * 1.1 }')" "$src" "$work/c$i.pcap"
done
mergecap -F pcap -w "$work/flood.pcap" "$work"/c*.pcap
rm -f "$work"/c*.pcap
total=$(capinfos -c -M "$work/flood.pcap" | awk '/Number of packets/ { print $NF }')

ip netns add "$ns"
inns() { ip netns exec "$ns" "$@"; }
inns ip link add nwa type veth peer name nwb
inns sysctl -qw net.ipv6.conf.all.disable_ipv6=1
inns sysctl -qw net.ipv6.conf.default.disable_ipv6=1
inns ip link set nwa up
inns ip link set nwb up
rx() { inns cat /sys/class/net/nwb/statistics/rx_packets; }

# Starts "$@" in the namespace under GNU time; sets $tpid (time's) and $cpid (the tool's).
start() {
    local out="$1"; shift
    ip netns exec "$ns" /usr/bin/time -f "%U %S" -o "$work/time" "$@" >/dev/null 2>"$out" &
    tpid=$!
    cpid=""
    for _ in $(seq 50); do
        cpid=$(pgrep -P "$tpid" || true)
        [ -n "$cpid" ] && break
        sleep 0.1
    done
}

# Replays the flood at $1 (packets/s, or "top"); prints "received achieved_pps".
replay() {
    local before after speed
    before=$(rx)
    if [ "$1" = top ]; then speed=(--topspeed); else speed=("--pps=$1"); fi
    local log
    log=$(inns tcpreplay -q "${speed[@]}" -i nwa "$work/flood.pcap" 2>&1 || true)
    sleep 1
    after=$(rx)
    local achieved
    achieved=$(echo "$log" | awk '/Rated:/ { for (i = 1; i <= NF; i++) if ($i == "pps,") print $(i-1); else if ($i == "pps") print $(i-1) }' | head -1)
    echo "$((after - before)) ${achieved:-?}"
}

# Stops the running tool with SIGTERM and waits for it.
finish() {
    kill -TERM "$cpid"
    wait "$tpid" || true
}

cpu() { awk '{ printf "%.3f", $1 + $2 }' "$work/time"; }

run_normwatch() {
    local cfg=()
    [ -n "${NORMWATCH_CONFIG:-}" ] && cfg=(--config "$NORMWATCH_CONFIG")
    start "$work/nw.err" "$nw" flows "${cfg[@]}" --interface nwb --checksums ignore --stats -o /dev/null
    sleep 1.5
    read -r got_rx achieved < <(replay "$1")
    finish
    taken=$(awk -F'\t' '$1 == "packets" { print $2 }' "$work/nw.err")
    taken=${taken:-0}
}

run_dumpcap() {
    start "$work/dc.err" dumpcap -q -i nwb -w "$work/dc.pcapng"
    sleep 1.5
    read -r got_rx achieved < <(replay "$1")
    finish
    # "Packets received/dropped on interface 'nwb': 757260/0 (...)"
    taken=$(sed -n "s/.*Packets received\/dropped on interface '[^']*': \([0-9]*\)\/.*/\1/p" "$work/dc.err")
    taken=${taken:-0}
    rm -f "$work/dc.pcapng"
}

echo "# live-capture loss: $total packets per replay, $rounds round(s); $(nproc) cores, $(uname -r)"
echo "# normwatch config: ${NORMWATCH_CONFIG:-defaults}"
echo "# $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
command -v fastnetmon >/dev/null || echo "# FastNetMon: not installed, not measured"
printf "%-6s %-6s %-10s %-12s %-10s %-10s %-10s %-12s\n" \
    round rate tool replay_pps veth_rx taken lost cpu_ns/pkt
for r in $(seq "$rounds"); do
    for rate in $rates; do
        for tool in normwatch dumpcap; do
            "run_$tool" "$rate"
            lost=$((got_rx - taken))
            c=$(cpu)
            per=$(awk -v c="$c" -v n="$taken" 'BEGIN { if (n > 0) printf "%.0f", c * 1e9 / n; else print "-" }')
            printf "%-6s %-6s %-10s %-12s %-10s %-10s %-10s %-12s\n" \
                "$r" "$rate" "$tool" "$achieved" "$got_rx" "$taken" "$lost" "$per"
        done
    done
done
