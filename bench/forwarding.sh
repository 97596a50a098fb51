#!/usr/bin/env bash
# Forwarding throughput, measured in one run on one topology:
#   gen (trafgen) --veth-- router namespace --veth-- sink
# 1. Linux kernel forwarding (ip_forward=1 in the router namespace, swrouter not running);
# 2. swrouter on the same veths with its pnet backend, 3. with its mmap (PACKET_MMAP) backend.
# 64-byte UDP frames (60 B + FCS), WINDOW-second windows, REPS repetitions, medians of the
# packets/s counted at the sink's interface; also the generator-only rate, so a
# generator-bound result is visible. Needs root, trafgen (netsniff-ng) and a release build.
#
#   bench/forwarding.sh [WINDOW_SECONDS] [REPS]
set -euo pipefail
cd "$(dirname "$0")/.."
WINDOW=${1:-10}
REPS=${2:-3}
BIN=${SWROUTER_BIN:-target/release/swrouter}
[ "$(id -u)" -eq 0 ] || { echo "bench/forwarding.sh needs root (network namespaces)" >&2; exit 1; }
command -v trafgen >/dev/null || { echo "trafgen missing: apt-get install -y netsniff-ng" >&2; exit 1; }
[ -x "$BIN" ] || { echo "$BIN missing: cargo build --release --bin swrouter" >&2; exit 1; }

P="swbench$$"
GEN="$P-gen" RTR="$P-rtr" SNK="$P-snk"
WORK=$(mktemp -d)
ROUTER_PID=""
cleanup() {
  [ -n "$ROUTER_PID" ] && kill "$ROUTER_PID" 2>/dev/null && wait "$ROUTER_PID" 2>/dev/null || true
  for ns in "$GEN" "$RTR" "$SNK"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

for ns in "$GEN" "$RTR" "$SNK"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$GEN" link add eth0 type veth peer name eth0 netns "$RTR"
ip -n "$RTR" link add eth1 type veth peer name eth0 netns "$SNK"
for l in "$GEN eth0" "$RTR eth0" "$RTR eth1" "$SNK eth0"; do set -- $l; ip -n "$1" link set "$2" up; done
ip -n "$GEN" addr add 10.0.1.2/24 dev eth0
ip -n "$GEN" route add default via 10.0.1.1
ip -n "$SNK" addr add 10.0.2.2/24 dev eth0
ip -n "$SNK" route add default via 10.0.2.1
# The sink answers closed ports at most once a minute, so no reverse load skews the numbers.
ip netns exec "$SNK" sysctl -qw net.ipv4.icmp_ratelimit=60000

mac() { ip -n "$1" -br link show "$2" | awk '{print $3}'; }
hexmac() { echo "$1" | sed 's/^/0x/; s/:/, 0x/g'; }
rx() { ip -n "$1" -s -j link show "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])'; }
tx() { ip -n "$1" -s -j link show "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["tx"]["packets"])'; }

RTR_MAC=$(mac "$RTR" eth0)
GEN_MAC=$(mac "$GEN" eth0)
# 60-byte frame: Ethernet, IPv4 10.0.1.2 -> 10.0.2.2 (TTL 64), UDP random source port -> 9,
# 18 bytes payload; IPv4 checksum computed by trafgen, UDP checksum 0 (allowed for IPv4).
cat > "$WORK/udp64.cfg" <<CFG
{
  $(hexmac "$RTR_MAC"), $(hexmac "$GEN_MAC"), c16(0x0800),
  0x45, 0x00, c16(46), drnd(2), c16(0x0000), 64, 17, csumip(14, 33),
  10, 0, 1, 2, 10, 0, 2, 2,
  drnd(2), c16(9), c16(26), c16(0),
  fill(0x5a, 18)
}
CFG

# One window: run trafgen for WINDOW seconds on CPU 0, count what the sink received.
measure() {
  local before_rx before_tx after_rx after_tx
  before_rx=$(rx "$SNK" eth0); before_tx=$(tx "$GEN" eth0)
  ip netns exec "$GEN" timeout --signal=INT "$WINDOW" taskset -c 0 trafgen --dev eth0 --conf "$WORK/udp64.cfg" --cpus 1 --no-sock-mem --notouch-irq >/dev/null 2>&1 || true
  sleep 0.5
  after_rx=$(rx "$SNK" eth0); after_tx=$(tx "$GEN" eth0)
  echo "$(( (after_rx - before_rx) / WINDOW )) $(( (after_tx - before_tx) / WINDOW ))"
}
# Latency through the router: 400 pings 10 ms apart (a low-rate timestamped stream) from the
# generator to the sink and back, both directions crossing the router; p50/p99 of the RTT in µs.
latency() {
  ip netns exec "$GEN" ping -q -c 400 -i 0.01 -W 1 10.0.2.2 >/dev/null 2>&1 || true
  ip netns exec "$GEN" ping -c 400 -i 0.01 -W 1 10.0.2.2 2>/dev/null | python3 -c '
import re, sys
rtts = sorted(float(m.group(1)) * 1000 for m in (re.search(r"time=([0-9.]+) ms", l) for l in sys.stdin) if m)
if not rtts:
    print("n/a n/a")
else:
    print("%d %d" % (rtts[len(rtts) // 2], rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]))
'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

run_mode() {
  local name=$1 sink=() gen=()
  for i in $(seq "$REPS"); do
    read -r s g < <(measure)
    sink+=("$s"); gen+=("$g")
    printf '  %-8s rep %d: sink %8d pps   generator %8d pps\n' "$name" "$i" "$s" "$g" >&2
  done
  echo "$(printf '%s\n' "${sink[@]}" | median) $(printf '%s\n' "${gen[@]}" | median)"
}

echo "forwarding benchmark: 64-byte UDP, ${WINDOW}s windows, $REPS repetitions, medians" >&2

# --- 0. generator only: the router namespace drops everything (no forwarding, no addresses) --
read -r _ G_ONLY < <(run_mode generator)

# --- 1. kernel forwarding --------------------------------------------------------------
ip -n "$RTR" addr add 10.0.1.1/24 dev eth0
ip -n "$RTR" addr add 10.0.2.1/24 dev eth1
ip netns exec "$RTR" sysctl -qw net.ipv4.ip_forward=1
ip netns exec "$GEN" ping -c 1 -W 2 10.0.2.2 >/dev/null
read -r K_SINK K_GEN < <(run_mode kernel)
read -r K_P50 K_P99 < <(latency)

# --- 2./3. swrouter, once per I/O backend -------------------------------------------------
ip netns exec "$RTR" sysctl -qw net.ipv4.ip_forward=0
ip -n "$RTR" addr flush dev eth0
ip -n "$RTR" addr flush dev eth1
declare -A SINK GENR DROPS RINGFULL CPU P50 P99 SYSCALLS
router_rx() { "$BIN" status -s "$WORK/swrouter.sock" --json | python3 -c 'import json,sys; print(sum(i["rx_packets"] for i in json.load(sys.stdin)["interfaces"]))'; }
# System calls the router makes per packet it receives, counted by perf over 2 s of flood.
syscalls_per_packet() {
  command -v perf >/dev/null || { echo n/a; return; }
  ip netns exec "$GEN" timeout --signal=INT 4 taskset -c 0 trafgen --dev eth0 --conf "$WORK/udp64.cfg" --cpus 1 --no-sock-mem --notouch-irq >/dev/null 2>&1 &
  local tg=$! rx0 rx1 n
  sleep 0.5
  rx0=$(router_rx)
  n=$(perf stat -x, -e raw_syscalls:sys_enter -p "$ROUTER_PID" -- sleep 2 2>&1 | awk -F, '/raw_syscalls/ {print $1}')
  rx1=$(router_rx)
  wait "$tg" 2>/dev/null || true
  python3 -c "print(f'{int(\"$n\") / max(1, $rx1 - $rx0):.3f}')" 2>/dev/null || echo n/a
}
for backend in pnet mmap; do
  cat > "$WORK/router.conf" <<CONF
[router]
management-socket = "$WORK/swrouter.sock"
log-level = "info"
io-backend = "$backend"
[[interface]]
name = "eth0"
address = "10.0.1.1/24"
[[interface]]
name = "eth1"
address = "10.0.2.1/24"
CONF
  ip netns exec "$RTR" taskset -c 1 "$BIN" -c "$WORK/router.conf" 2>"$WORK/router-$backend.log" &
  ROUTER_PID=$!
  for _ in $(seq 50); do [ -S "$WORK/swrouter.sock" ] && break; sleep 0.1; done
  ip -n "$GEN" neigh flush dev eth0
  ip netns exec "$GEN" ping -c 2 -W 2 10.0.2.2 >/dev/null
  read -r P50[$backend] P99[$backend] < <(latency)
  cpu_before=$(awk '{print $14 + $15}' "/proc/$ROUTER_PID/stat")
  read -r s g < <(run_mode "sw-$backend")
  cpu_after=$(awk '{print $14 + $15}' "/proc/$ROUTER_PID/stat")
  SYSCALLS[$backend]=$(syscalls_per_packet)
  SINK[$backend]=$s GENR[$backend]=$g
  # CPU seconds the router used per second of measurement, in percent of one core.
  CPU[$backend]=$(( (cpu_after - cpu_before) * 100 / $(getconf CLK_TCK) / (WINDOW * REPS) ))
  "$BIN" status -s "$WORK/swrouter.sock" --json > "$WORK/status.json"
  DROPS[$backend]=$(python3 - "$WORK/status.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(" ".join("%s:%s=%d" % (p["stage"], k, v) for p in s["pipeline"] for k, v in p["drops"].items()) or "none")
PY
)
  RINGFULL[$backend]=$(python3 -c 'import json,sys; print(sum(i["rx_ring_full"] for i in json.load(open(sys.argv[1]))["interfaces"]))' "$WORK/status.json")
  kill "$ROUTER_PID"; wait "$ROUTER_PID" 2>/dev/null || true; ROUTER_PID=""
  rm -f "$WORK/swrouter.sock"
done

ratio() { python3 -c "print(f'{$1/$2:.3f}' if $2 else 'n/a')"; }
echo
echo "generator alone (router namespace drops everything): $G_ONLY pps"
printf '%-30s %10s %14s %8s %10s %14s %10s\n' "mode" "sink pps" "generator pps" "ratio" "router CPU" "rtt p50/p99 µs" "syscalls/pkt"
printf '%-30s %10d %14d %8s %10s %14s %10s\n' "linux kernel forwarding" "$K_SINK" "$K_GEN" "1.000" "-" "$K_P50/$K_P99" "-"
for backend in pnet mmap; do
  printf '%-30s %10d %14d %8s %9s%% %14s %10s\n' "swrouter ($backend)" "${SINK[$backend]}" "${GENR[$backend]}" "$(ratio "${SINK[$backend]}" "$K_SINK")" "${CPU[$backend]}" "${P50[$backend]}/${P99[$backend]}" "${SYSCALLS[$backend]}"
done
for backend in pnet mmap; do
  echo "swrouter ($backend): drops ${DROPS[$backend]}; rx-ring-full ${RINGFULL[$backend]}"
done
