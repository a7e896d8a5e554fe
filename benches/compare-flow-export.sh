#!/usr/bin/env bash
# Flow-export collectors side by side: normwatch's decoder (the `collect` example of
# normwatch-flowexport: listener thread + decoder) and nfcapd (Debian nfdump) receive the
# same stream in the same run. The stream is what softflowd exports for a capture (NetFlow
# v9 by default), recorded once on loopback, then replayed ROUNDS times to both collectors,
# each datagram to one and then the other. Reported per collector: datagrams and flow
# records received, and per core: datagrams and records per CPU second (user + system time
# of the collector process, read from /proc). Loopback only.
#
#   benches/compare-flow-export.sh [capture] [netflow version 5|9|10] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
pcap=${1:-../shared/data/captures/packet-captures/pkt.TCP.synflood.spoofed.pcap}
version=${2:-9}
rounds=${3:-50}
for t in softflowd nfcapd nfdump python3; do
  command -v "$t" >/dev/null || { echo "$t is missing (.ci/run installs it)" >&2; exit 2; }
done
cargo build --release -q -p normwatch-flowexport --example collect
collect=target/release/examples/collect
tmp=$(mktemp -d)
# softflowd 1.1.0 cuts `-r` and control-socket paths longer than 16 characters; its pid file
# gets a path of its own (softflowd removes it at exit).
short=/tmp/x$$.pcap
cp "$pcap" "$short"
cleanup() { rm -rf "$tmp" "$short" "/tmp/c$$" "/tmp/p$$"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Record the exporter's stream: length-prefixed datagrams.
rec_port=$(free_port)
python3 - "$rec_port" "$tmp/stream.bin" <<'PY' &
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.settimeout(3)
with open(sys.argv[2], "wb") as f:
    try:
        while True:
            d = s.recv(65535)
            f.write(struct.pack("!I", len(d)) + d)
            s.settimeout(2)
    except socket.timeout:
        pass
PY
recorder=$!
sleep 0.5
(cd /tmp && softflowd -d -6 -m 1000000 -r "$(basename "$short")" -n "127.0.0.1:$rec_port" \
  -v "$version" -c "/tmp/c$$" -p "/tmp/p$$" >/dev/null 2>&1)
wait "$recorder"

nw_port=$(free_port)
nf_port=$(free_port)
"$collect" "127.0.0.1:$nw_port" 3 >"$tmp/nw.out" &
nw_pid=$!
mkdir -p "$tmp/nf"
nfcapd -w "$tmp/nf" -b 127.0.0.1 -p "$nf_port" -B 8388608 -t 3600 -P "$tmp/nf.pid" >"$tmp/nf.log" 2>&1 &
nf_pid=$!
sleep 1

python3 - "$tmp/stream.bin" "$rounds" "$nw_port" "$nf_port" <<'PY'
import socket, struct, sys, time
data = open(sys.argv[1], "rb").read()
dgrams, i = [], 0
while i < len(data):
    (n,) = struct.unpack_from("!I", data, i)
    dgrams.append(data[i + 4:i + 4 + n])
    i += 4 + n
rounds = int(sys.argv[2])
a = ("127.0.0.1", int(sys.argv[3]))
b = ("127.0.0.1", int(sys.argv[4]))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t = time.time()
for r in range(rounds):
    for k, d in enumerate(dgrams):
        s.sendto(d, a)
        s.sendto(d, b)
        # A breath every 64 datagrams so neither receive buffer overflows.
        if k % 64 == 63:
            time.sleep(0.0005)
print(f"sent {len(dgrams)} datagrams x {rounds} rounds to each collector in {time.time() - t:.1f} s")
PY

wait "$nw_pid"
sleep 1
ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
nf_ticks=$(ticks "$nf_pid")
kill -TERM "$nf_pid"
wait "$nf_pid" || true
hz=$(getconf CLK_TCK)
nf_stats=$(nfdump -R "$tmp/nf" -I 2>/dev/null || true)
nf_flows=$(awk -F': ' '/^Flows:/ { print $2; exit }' <<<"$nf_stats")
sent=$(python3 -c "
import struct,sys
d=open('$tmp/stream.bin','rb').read(); i=n=0
while i<len(d):
    (l,)=struct.unpack_from('!I',d,i); i+=4+l; n+=1
print(n*$rounds)")
line=$(tail -1 "$tmp/nw.out")
get() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" <<<"$line"; }
nw_dgrams=$(get datagrams); nw_records=$(get records); nw_ticks=$(get cpu_ticks)
echo
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
name=$([ "$version" = 10 ] && echo IPFIX || echo "NetFlow v$version")
echo "stream: softflowd $name of $(basename "$pcap"), $sent datagrams to each collector"
printf '%-10s %12s %12s %9s %16s %16s\n' collector datagrams records cpu_s "datagrams/cpu_s" "records/cpu_s"
rate() { python3 -c "t=$2/$hz; print(f'{$1/t:,.0f}' if t > 0 else 'n/a')"; }
printf '%-10s %12s %12s %9s %16s %16s\n' normwatch "$nw_dgrams" "$nw_records" \
  "$(python3 -c "print(f'{$nw_ticks/$hz:.2f}')")" "$(rate "$nw_dgrams" "$nw_ticks")" "$(rate "$nw_records" "$nw_ticks")"
printf '%-10s %12s %12s %9s %16s %16s\n' nfcapd "($sent sent)" "${nf_flows:-?}" \
  "$(python3 -c "print(f'{$nf_ticks/$hz:.2f}')")" "$(rate "$sent" "$nf_ticks")" "$(rate "${nf_flows:-0}" "$nf_ticks")"
echo "nfcapd counts no datagrams of its own; its rate assumes every datagram sent arrived (see its records)."
