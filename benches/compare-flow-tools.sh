#!/usr/bin/env bash
# Flow extraction from capture files, side by side in one run: normwatch and Debian's
# softflowd, argus and pmacctd read the same files; each tool's time is the best of 5
# wall-clock runs, taken in turns (every tool once per round) so that all of them meet the
# same moments of a shared machine, and the script prints packets/s and normwatch's speed
# over each peer.
#
# Usage: benches/compare-flow-tools.sh [PACKETS]
#   Each capture is appended to itself (mergecap -a) until it holds about PACKETS packets
#   (default 1000000), so that every tool runs long enough to time.
#
# Every tool works offline on files; the only network use is softflowd's NetFlow export,
# which goes to the discard port on 127.0.0.1. The machines are shared and noisy: read the
# figures as ratios from one run.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:-1000000}
shared=${NORMWATCH_SHARED_DATA:-../shared/data}
caps=$shared/captures
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

for tool in mergecap capinfos; do
  command -v "$tool" >/dev/null || { echo "needs $tool (Debian package tshark / wireshark-common)" >&2; exit 1; }
done

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(date -u +%Y-%m-%dT%H:%MZ)"
cargo build --release -q -p normwatch-cli
nw=${CARGO_TARGET_DIR:-target}/release/normwatch

# name|source capture
inputs=(
  "syn-flood (60 B packets, one flow each)|$caps/packet-captures/pkt.TCP.synflood.spoofed.pcap"
  "tcp-flood (ntopng)|$caps/ntopng-e2e-tests/rest/pcap/tcp-flood.pcap"
  "modbus (ICS polling, long flows)|$caps/ICS-Security-Tools/pcaps/ModbusTCP/ModbusTCP.pcap"
  "ssh (Zeek trace, bulk data)|$caps/zeek/testing/btest/Traces/ssh/ssh.pcap"
)

# Wall time in seconds of one run of "$@" (output discarded).
time_once() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>&1 </dev/null || echo "  ($* failed or timed out)" >&2
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}
rounds=5

# Every tool gets at most this long per run; a peer that hangs is reported, not waited for.
limit=300

run_normwatch() { timeout "$limit" "$nw" flows --checksums ignore --pcap "$1" >"$tmp/nw.out"; }
# softflowd: -d stays in the foreground and exits at the end of the file; -6 tracks IPv6;
# a table as large as normwatch's so neither evicts.
run_softflowd() {
  # softflowd 1.1.0 cuts the -r path to 16 characters when it reads a file, so it is given
  # a short relative name.
  rm -f "$tmp/sf.ctl"
  (cd "$(dirname "$1")" && timeout "$limit" softflowd -d -6 -m 1000000 -r "$(basename "$1")" \
    -n 127.0.0.1:9 -p sf.pid -c sf.ctl >"$tmp/sf.out" 2>&1)
}
run_argus() {
  rm -f "$tmp/out.argus"
  timeout "$limit" argus -r "$1" -w "$tmp/out.argus"
}
# pmacctd: the core and plugin processes talk through a queue; the default is small enough
# that the core sleeps on it, so it gets the documented 1:100 buffer/pipe sizing.
run_pmacctd() {
  cat >"$tmp/pm.conf" <<EOF
daemonize: false
pcap_savefile: $1
aggregate: src_host, dst_host, src_port, dst_port, proto
plugins: print
print_output: csv
print_output_file: $tmp/pm.csv
plugin_buffer_size: 1024000
plugin_pipe_size: 102400000
EOF
  rm -f "$tmp/pm.csv"
  timeout "$limit" pmacctd -f "$tmp/pm.conf" </dev/null
}

flows_of() {
  case $1 in
    normwatch) echo $(($(wc -l <"$tmp/nw.out") - 1)) ;;
    softflowd) grep -m1 'Flows expired' "$tmp/sf.out" | awk '{print $3}' ;;
    argus) ra -r "$tmp/out.argus" -n -L -1 2>/dev/null | wc -l ;;
    pmacctd) echo $(($(wc -l <"$tmp/pm.csv") - 1)) ;;
  esac
}

tools=(normwatch)
for peer in softflowd argus pmacctd; do
  if command -v "$peer" >/dev/null; then tools+=("$peer"); else echo "skipping $peer: not installed"; fi
done

printf '\n%-40s %9s %-10s %8s %12s %8s %s\n' capture packets tool seconds packets/s flows "normwatch speed-up"
for entry in "${inputs[@]}"; do
  name=${entry%%|*}
  src=${entry#*|}
  [ -f "$src" ] || { echo "missing $src" >&2; continue; }
  file="$tmp/input.pcap"
  one=$(capinfos -c -M "$src" | awk '/Number of packets/ {print $4}')
  repeat=$(((target + one - 1) / one))
  srcs=()
  for _ in $(seq "$repeat"); do srcs+=("$src"); done
  mergecap -a -F pcap -w "$file" "${srcs[@]}"
  pkts=$(capinfos -c -M "$file" | awk '/Number of packets/ {print $4}')
  declare -A secs=()
  for _ in $(seq "$rounds"); do
    for tool in "${tools[@]}"; do
      dt=$(time_once "run_$tool" "$file")
      if [ -z "${secs[$tool]:-}" ] || [ "$(echo "$dt < ${secs[$tool]}" | bc -l)" = 1 ]; then
        secs[$tool]=$(printf '%.3f' "$dt")
      fi
    done
  done
  for tool in "${tools[@]}"; do
    "run_$tool" "$file" >/dev/null 2>&1
    rate=$(echo "$pkts / ${secs[$tool]}" | bc -l)
    ratio=""
    if [ "$tool" != normwatch ]; then
      ratio=$(printf '%.1fx' "$(echo "${secs[$tool]} / ${secs[normwatch]}" | bc -l)")
    fi
    printf '%-40s %9d %-10s %8s %12.0f %8s %s\n' "$name" "$pkts" "$tool" "${secs[$tool]}" "$rate" "$(flows_of "$tool")" "$ratio"
  done
  fastest=""
  for tool in "${tools[@]}"; do
    [ "$tool" = normwatch ] && continue
    if [ -z "$fastest" ] || [ "$(echo "${secs[$tool]} < ${secs[$fastest]}" | bc -l)" = 1 ]; then fastest=$tool; fi
  done
  if [ -n "$fastest" ]; then
    printf '%-40s normwatch is %.1fx the fastest peer (%s)\n' "" "$(echo "${secs[$fastest]} / ${secs[normwatch]}" | bc -l)" "$fastest"
  fi
  unset secs
done
echo
echo "Flow counts differ by design: peers use their own timeouts and flow keys (pmacctd"
echo "aggregates unidirectionally, softflowd and argus have their own expiry rules)."
