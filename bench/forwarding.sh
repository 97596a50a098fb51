#!/usr/bin/env bash
# Forwarding throughput, measured in one run on one topology:
#
#   gen (trafgen) --veth-- eth0 [router namespace] eth1 --veth-- sink
#                                eth3  eth2  eth4
#                                 |     |     |
#                                 |   cache (swcache; redirected frames counted at its eth0)
#                                 +-- fw --+  (a Linux bridge: the steering rows' firewall)
#
# Rows (all by default; choose with BENCH_ROWS="kernel,mmap,gre-mmap", comma-separated; the
# swrouter rows run in the order given, and a row named twice runs twice):
#   generator  the generator alone (the router namespace drops everything), so a
#              generator-bound result is visible;
#   kernel     Linux kernel forwarding (ip_forward=1, swrouter not running): the baseline;
#   pnet, mmap swrouter plain forwarding on its pnet / mmap (PACKET_MMAP) backend;
#   gre-pnet, gre-mmap, l2-pnet, l2-mmap
#              the WCCP redirect path: the generator-facing interface has
#              `wccp-redirect-in = [90]`, dynamic service 90 is UDP port 9 (the generator's
#              destination port) and swcache in the cache namespace joins with GRE or L2
#              forwarding (GRE return) and gets all 256 buckets; the rate is what reaches the
#              cache's interface (an nftables netdev ingress chain there drops the redirected frames, so the
#              cache namespace costs nothing; WCCP itself still flows);
#   steering-pnet, steering-mmap
#              the service-chain steering path: the generator sends to service 10.0.9.9
#              udp/9, whose chain is a transparent firewall (a namespace bridging two veths,
#              reached on eth3 and returning on eth4) and then a NAT server (the sink,
#              10.0.2.2); the rate is what reaches the sink;
#   base-mmap  only with SWROUTER_BIN_BASE=/path/to/another/swrouter: plain forwarding on
#              mmap with that binary, to compare two builds in one run.
#   kernel-nat, nat-pnet, nat-mmap
#              source NAT of established flows (issue 14): the generator's UDP frames come
#              from 256 source ports (so 256 sessions, all established after the first
#              round), translated to eth1's address; kernel-nat is Linux forwarding with an
#              nftables masquerade rule (conntrack), the anchor of the NAT rows; the rate is
#              what reaches the sink;
#   kernel-nat-syn, nat-syn-mmap
#              new sessions per second: every frame is a TCP SYN from a random source port
#              to the sink's listening port 8080, so every frame is a set-up request (through
#              swrouter's switch processor); the rate is the SYN-ACKs that come back through
#              the NAT to the generator's interface.
# 64-byte UDP frames (60 B + FCS), WINDOW-second windows, REPS repetitions, medians of the
# packets/s counted at the receiving interface; ratios are to kernel plain forwarding of the
# same run. Needs root, trafgen (netsniff-ng), nft, and a release build of swrouter and swcache.
#
#   bench/forwarding.sh [WINDOW_SECONDS] [REPS]
#   BENCH_ROWS=gre-mmap,l2-mmap bench/forwarding.sh 2 1     # a quick check
set -euo pipefail
cd "$(dirname "$0")/.."
WINDOW=${1:-10}
REPS=${2:-3}
BIN=${SWROUTER_BIN:-target/release/swrouter}
CACHE_BIN=${SWCACHE_BIN:-$(dirname "$BIN")/swcache}
BASE_BIN=${SWROUTER_BIN_BASE:-}
ALL_ROWS="generator,kernel,pnet,mmap,gre-pnet,gre-mmap,l2-pnet,l2-mmap,steering-pnet,steering-mmap,kernel-nat,nat-pnet,nat-mmap,kernel-nat-syn,nat-syn-mmap"
[ -n "$BASE_BIN" ] && ALL_ROWS="${ALL_ROWS/mmap,gre-pnet/mmap,base-mmap,gre-pnet}"
ROWS=${BENCH_ROWS:-$ALL_ROWS}
want() { [[ ",$ROWS," == *",$1,"* ]]; }
for r in ${ROWS//,/ }; do
  [[ ",$ALL_ROWS,base-mmap," == *",$r,"* ]] || { echo "unknown row $r; rows: $ALL_ROWS,base-mmap" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "bench/forwarding.sh needs root (network namespaces)" >&2; exit 1; }
command -v trafgen >/dev/null || { echo "trafgen missing: apt-get install -y netsniff-ng" >&2; exit 1; }
[ -x "$BIN" ] || { echo "$BIN missing: cargo build --release --bin swrouter" >&2; exit 1; }
if [[ "$ROWS" == *gre-* || "$ROWS" == *l2-* ]]; then
  [ -x "$CACHE_BIN" ] || { echo "$CACHE_BIN missing: cargo build --release --bin swcache" >&2; exit 1; }
fi
if want base-mmap; then
  [ -x "$BASE_BIN" ] || { echo "base-mmap needs SWROUTER_BIN_BASE=/path/to/swrouter" >&2; exit 1; }
fi

P="swbench$$"
GEN="$P-gen" RTR="$P-rtr" SNK="$P-snk" CCH="$P-cch" FW="$P-fw"
WORK=$(mktemp -d)
ROUTER_PID=""
CACHE_PID=""
stop_pid() { [ -n "$1" ] && kill "$1" 2>/dev/null && wait "$1" 2>/dev/null || true; }
SINK_LISTENER=""
cleanup() {
  stop_pid "$SINK_LISTENER"
  stop_pid "$CACHE_PID"
  stop_pid "$ROUTER_PID"
  for ns in "$GEN" "$RTR" "$SNK" "$CCH" "$FW"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

for ns in "$GEN" "$RTR" "$SNK" "$CCH" "$FW"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$GEN" link add eth0 type veth peer name eth0 netns "$RTR"
ip -n "$RTR" link add eth1 type veth peer name eth0 netns "$SNK"
ip -n "$RTR" link add eth2 type veth peer name eth0 netns "$CCH"
ip -n "$RTR" link add eth3 type veth peer name lega netns "$FW"
ip -n "$RTR" link add eth4 type veth peer name legb netns "$FW"
ip -n "$FW" link add br0 type bridge
ip -n "$FW" link set lega master br0
ip -n "$FW" link set legb master br0
for l in "$GEN eth0" "$RTR eth0" "$RTR eth1" "$RTR eth2" "$RTR eth3" "$RTR eth4" "$SNK eth0" "$CCH eth0" "$FW lega" "$FW legb" "$FW br0"; do set -- $l; ip -n "$1" link set "$2" up; done
ip -n "$GEN" addr add 10.0.1.2/24 dev eth0
ip -n "$GEN" route add default via 10.0.1.1
ip -n "$SNK" addr add 10.0.2.2/24 dev eth0
ip -n "$SNK" route add default via 10.0.2.1
ip -n "$CCH" addr add 10.0.3.2/24 dev eth0
ip -n "$CCH" route add default via 10.0.3.1
# The sink answers closed ports at most once a minute, so no reverse load skews the numbers.
ip netns exec "$SNK" sysctl -qw net.ipv4.icmp_ratelimit=60000
# The cache counts redirected frames at its interface and drops them at ingress (GRE, and the
# generator's UDP port 9 for L2), before any protocol work; WCCP (UDP 2048) and ARP pass.
ip netns exec "$CCH" nft -f - <<'NFT'
table netdev bench {
  chain ingress {
    type filter hook ingress device "eth0" priority 0;
    ip protocol gre drop
    udp dport 9 drop
  }
}
NFT

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

# The steering rows aim the same frame at the service address 10.0.9.9.
sed 's/^  10, 0, 1, 2, 10, 0, 2, 2,$/  10, 0, 1, 2, 10, 0, 9, 9,/' "$WORK/udp64.cfg" > "$WORK/udp64-svc.cfg"
grep -q '10, 0, 9, 9' "$WORK/udp64-svc.cfg" || { echo "could not build the service frame" >&2; exit 1; }
TRAFGEN_CFG="$WORK/udp64.cfg"
# The NAT rows: 256 source ports (0x1000 + 0..255), established sessions.
sed 's/^  drnd(2), c16(9), c16(26), c16(0),$/  0x10, dinc(0, 255, 1), c16(9), c16(26), c16(0),/' "$WORK/udp64.cfg" > "$WORK/udp64-flows.cfg"
grep -q 'dinc(0, 255, 1)' "$WORK/udp64-flows.cfg" || { echo "could not build the NAT flows frame" >&2; exit 1; }
# The NAT set-up rows: TCP SYN 10.0.1.2:random -> 10.0.2.2:8080, random ISN, TCP checksum by
# trafgen (which sums to the end of the frame, so the frame is not padded: 54 bytes; veth
# carries it).
cat > "$WORK/syn64.cfg" <<CFG
{
  $(hexmac "$RTR_MAC"), $(hexmac "$GEN_MAC"), c16(0x0800),
  0x45, 0x00, c16(40), drnd(2), c16(0x4000), 64, 6, csumip(14, 33),
  10, 0, 1, 2, 10, 0, 2, 2,
  drnd(2), c16(8080), drnd(4), c32(0), 0x50, 0x02, c16(64240), csumtcp(14, 34), c16(0)
}
CFG
# The sink listens on 8080 so its kernel answers every SYN with a SYN-ACK (SYN cookies when the
# queue is full); the generator's kernel then resets each, like a port scan's.
ip netns exec "$SNK" python3 -c '
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.0.2.2", 8080)); s.listen(4096)
while True: time.sleep(3600)' &
SINK_LISTENER=$!

# The set-up rows count SYN-ACKs only (an nftables counter on the generator's input), so the
# ICMP errors a NAT answers exhausted set-ups with are not counted as set-ups.
ip netns exec "$GEN" nft -f - <<'NFT'
table ip benchcount {
  chain input {
    type filter hook input priority 0;
    tcp flags & (syn | ack) == syn | ack counter
  }
}
NFT
synacks() { ip netns exec "$GEN" nft list chain ip benchcount input | awk '/counter packets/ {for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1)}'; }
# Packets NS's DEV received, or SYN-ACKs at the generator for the set-up rows.
received() {
  if [ "$TRAFGEN_CFG" = "$WORK/syn64.cfg" ]; then synacks; else rx "$1" "$2"; fi
}

# One window: run trafgen for WINDOW seconds on CPU 0, count what NS's DEV received.
measure() {
  local ns=$1 dev=$2 before_rx before_tx after_rx after_tx
  before_rx=$(received "$ns" "$dev"); before_tx=$(tx "$GEN" eth0)
  ip netns exec "$GEN" timeout --signal=INT "$WINDOW" taskset -c 0 trafgen --dev eth0 --conf "$TRAFGEN_CFG" --cpus 1 --no-sock-mem --notouch-irq >/dev/null 2>&1 || true
  sleep 0.5
  after_rx=$(received "$ns" "$dev"); after_tx=$(tx "$GEN" eth0)
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

# REPS windows of row NAME counted at NS's DEV; prints the medians "sink generator" and the
# packets received over all windows.
run_mode() {
  local name=$1 ns=$2 dev=$3 sink=() gen=() total=0
  for i in $(seq "$REPS"); do
    read -r s g < <(measure "$ns" "$dev")
    sink+=("$s"); gen+=("$g"); total=$((total + s * WINDOW))
    printf '  %-10s rep %d: received %8d pps   generator %8d pps\n' "$name" "$i" "$s" "$g" >&2
  done
  echo "$(printf '%s\n' "${sink[@]}" | median) $(printf '%s\n' "${gen[@]}" | median) $total"
}

echo "forwarding benchmark: 64-byte UDP, ${WINDOW}s windows, $REPS repetitions, medians; rows $ROWS" >&2
declare -A SINK GENR DROPS RINGFULL CPU NSPP P50 P99 SYSCALLS NOTE

# --- generator only: the router namespace drops everything (no forwarding, no addresses) ------
G_ONLY=n/a
if want generator; then read -r _ G_ONLY _ < <(run_mode generator "$SNK" eth0); fi

# --- kernel forwarding -------------------------------------------------------------------
# The kernel rows give the kernel a CPU of its own, as swrouter has CPU 1: on veth the
# receiver's work runs on the sender's CPU, so without this the router namespace's forwarding
# (or NAT), the sink's answers and the generator's replies would all run in softirq on CPU 0
# beside trafgen while CPU 1 idles. With GRO on, a veth receives through NAPI; threaded NAPI
# runs it in a kernel thread, pinned here to CPU 1. The packets it forwards are then received
# (sink, generator) on CPU 1 too, as they are when swrouter transmits from CPU 1. (RPS to CPU 1
# was tried first: trafgen's transmit ring on veth then stalls.)
kernel_cpu() {
  local on=$1 dev pid
  for dev in eth0 eth1; do
    if [ "$on" = 1 ]; then
      ip netns exec "$RTR" ethtool -K "$dev" gro on >/dev/null
      ip netns exec "$RTR" sh -c "echo 1 > /sys/class/net/$dev/threaded"
    else
      ip netns exec "$RTR" sh -c "echo 0 > /sys/class/net/$dev/threaded"
      ip netns exec "$RTR" ethtool -K "$dev" gro off >/dev/null
    fi
  done
  if [ "$on" = 1 ]; then
    sleep 0.2
    for pid in $(pgrep '^napi/eth[01]-'); do taskset -pc 1 "$pid" >/dev/null; done
  fi
}
command -v ethtool >/dev/null || { echo "bench/forwarding.sh needs ethtool (apt-get install ethtool)" >&2; exit 1; }
K_SINK=0
if want kernel; then
  kernel_cpu 1
  ip -n "$RTR" addr add 10.0.1.1/24 dev eth0
  ip -n "$RTR" addr add 10.0.2.1/24 dev eth1
  ip netns exec "$RTR" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$GEN" ping -c 1 -W 2 10.0.2.2 >/dev/null
  read -r K_SINK K_GEN _ < <(run_mode kernel "$SNK" eth0)
  read -r K_P50 K_P99 < <(latency)
  SINK[kernel]=$K_SINK GENR[kernel]=$K_GEN P50[kernel]=$K_P50 P99[kernel]=$K_P99 CPU[kernel]=- NSPP[kernel]=- SYSCALLS[kernel]=-
  ip netns exec "$RTR" sysctl -qw net.ipv4.ip_forward=0
  ip -n "$RTR" addr flush dev eth0
  ip -n "$RTR" addr flush dev eth1
  kernel_cpu 0
fi

# --- kernel NAT (nftables masquerade, conntrack) --------------------------------------------
K_NAT=0 K_SYN=0
kernel_nat() {
  local row=$1 count_ns=$2
  kernel_cpu 1
  ip -n "$RTR" addr add 10.0.1.1/24 dev eth0
  ip -n "$RTR" addr add 10.0.2.1/24 dev eth1
  ip netns exec "$RTR" sysctl -qw net.ipv4.ip_forward=1
  ip netns exec "$RTR" nft -f - <<'NFT'
table ip benchnat {
  chain post {
    type nat hook postrouting priority 100;
    oifname "eth1" masquerade
  }
}
NFT
  ip netns exec "$GEN" ping -c 1 -W 2 10.0.2.2 >/dev/null
  read -r SINK[$row] GENR[$row] _ < <(run_mode "$row" "$count_ns" eth0)
  P50[$row]=- P99[$row]=- CPU[$row]=- NSPP[$row]=- SYSCALLS[$row]=-
  ip netns exec "$RTR" nft delete table ip benchnat
  ip netns exec "$RTR" sysctl -qw net.ipv4.ip_forward=0
  ip -n "$RTR" addr flush dev eth0
  ip -n "$RTR" addr flush dev eth1
  kernel_cpu 0
}
if want kernel-nat; then
  TRAFGEN_CFG="$WORK/udp64-flows.cfg"
  kernel_nat kernel-nat "$SNK"
  K_NAT=${SINK[kernel-nat]}
  TRAFGEN_CFG="$WORK/udp64.cfg"
fi
if want kernel-nat-syn; then
  TRAFGEN_CFG="$WORK/syn64.cfg"
  kernel_nat kernel-nat-syn "$GEN"
  K_SYN=${SINK[kernel-nat-syn]}
  TRAFGEN_CFG="$WORK/udp64.cfg"
fi

# --- swrouter rows ------------------------------------------------------------------------
router_status() { "$1" status -s "$WORK/swrouter.sock" --json; }
router_rx() { router_status "$1" | python3 -c 'import json,sys; print(sum(i["rx_packets"] for i in json.load(sys.stdin)["interfaces"]))'; }
# System calls the router makes per packet it receives, counted by perf over 2 s of flood.
syscalls_per_packet() {
  local bin=$1
  command -v perf >/dev/null || { echo n/a; return; }
  ip netns exec "$GEN" timeout --signal=INT 4 taskset -c 0 trafgen --dev eth0 --conf "$TRAFGEN_CFG" --cpus 1 --no-sock-mem --notouch-irq >/dev/null 2>&1 &
  local tg=$! rx0 rx1 n
  sleep 0.5
  rx0=$(router_rx "$bin")
  n=$(perf stat -x, -e raw_syscalls:sys_enter -p "$ROUTER_PID" -- sleep 2 2>&1 | awk -F, '/raw_syscalls/ {print $1}')
  rx1=$(router_rx "$bin")
  wait "$tg" 2>/dev/null || true
  python3 -c "print(f'{int(\"$n\") / max(1, $rx1 - $rx0):.3f}')" 2>/dev/null || echo n/a
}
# Waits until the cache holds all 256 buckets of service 90 (usable and designated).
wait_assignment() {
  local bin=$1
  for _ in $(seq 120); do
    if router_status "$bin" 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
for svc in s.get("wccp", {}).get("services", []):
    if svc.get("id") == 90:
        for c in svc.get("caches", []):
            if c.get("address") == "10.0.3.2" and c.get("usable") and c.get("designated") and c.get("buckets") == 256:
                sys.exit(0)
sys.exit(1)
' 2>/dev/null; then return 0; fi
    sleep 0.5
  done
  echo "swcache did not get the assignment of service 90 within 60 s" >&2
  router_status "$bin" >&2 || true
  cat "$WORK/swcache.log" >&2 || true
  return 1
}

# One swrouter row: ROW name, BACKEND, MODE (plain, gre, l2, steering, nat or nat-syn), BIN.
router_row() {
  local row=$1 backend=$2 mode=$3 bin=$4 redirect="" count_ns="$SNK"
  if [ "$mode" = gre ] || [ "$mode" = l2 ]; then redirect="wccp-redirect-in = [90]"; count_ns="$CCH"; fi
  [ "$mode" = nat-syn ] && count_ns="$GEN"
  {
    printf '[router]\nmanagement-socket = "%s"\nlog-level = "info"\nio-backend = "%s"\n' "$WORK/swrouter.sock" "$backend"
    printf '[[interface]]\nname = "eth0"\naddress = "10.0.1.1/24"\n%s\n' "$redirect"
    printf '[[interface]]\nname = "eth1"\naddress = "10.0.2.1/24"\n'
    if [ "$mode" = gre ] || [ "$mode" = l2 ]; then
      printf '[[interface]]\nname = "eth2"\naddress = "10.0.3.1/24"\n'
      printf '[[wccp.service]]\nid = 90\n'
    fi
    if [ "$mode" = steering ]; then
      # The bridge returns frames unchanged: address them to our own MAC on the far side.
      printf '[[interface]]\nname = "eth3"\naddress = "10.0.5.1/24"\n'
      printf '[[interface]]\nname = "eth4"\naddress = "10.0.6.1/24"\n'
      printf '[[steering.device]]\nname = "fw"\nmode = "transparent"\ninterfaces = ["eth3", "eth4"]\nmac = "%s"\nout-mac = "%s"\n' "$(mac "$RTR" eth4)" "$(mac "$RTR" eth3)"
      printf '[[steering.device]]\nname = "srv"\nmode = "nat"\ninterfaces = ["eth1"]\naddress = "10.0.2.2"\n'
      printf '[[steering.service]]\nname = "bench"\naddress = "10.0.9.9"\nprotocol = "udp"\nport = 9\ningress = ["eth0"]\nchain = [{ device = "fw" }, { device = "srv" }]\n'
    fi
    if [ "$mode" = nat ] || [ "$mode" = nat-syn ]; then
      printf '[nat]\n[[nat.rule]]\ninside = ["10.0.1.0/24"]\noutside = "eth1"\n'
    fi
  } > "$WORK/router.conf"
  ip netns exec "$RTR" taskset -c 1 "$bin" -c "$WORK/router.conf" 2>"$WORK/router-$row.log" &
  ROUTER_PID=$!
  for _ in $(seq 50); do [ -S "$WORK/swrouter.sock" ] && break; sleep 0.1; done
  ip -n "$GEN" neigh flush dev eth0
  ip netns exec "$GEN" ping -c 2 -W 2 10.0.2.2 >/dev/null
  if [ "$mode" = plain ]; then
    read -r P50[$row] P99[$row] < <(latency)
  elif [ "$mode" = steering ]; then
    P50[$row]=- P99[$row]=-
    TRAFGEN_CFG="$WORK/udp64-svc.cfg"
  elif [ "$mode" = nat ]; then
    read -r P50[$row] P99[$row] < <(latency)
    TRAFGEN_CFG="$WORK/udp64-flows.cfg"
  elif [ "$mode" = nat-syn ]; then
    P50[$row]=- P99[$row]=-
    TRAFGEN_CFG="$WORK/syn64.cfg"
  else
    P50[$row]=- P99[$row]=-
    ip netns exec "$CCH" "$CACHE_BIN" --address 10.0.3.2 --router 10.0.3.1 --service 90:udp:9 \
      --forwarding "$mode" --return gre --tun wccp0 --socket "$WORK/swcache.sock" 2>"$WORK/swcache.log" &
    CACHE_PID=$!
    wait_assignment "$bin"
  fi
  cpu_before=$(awk '{print $14 + $15}' "/proc/$ROUTER_PID/stat")
  read -r s g total < <(run_mode "$row" "$count_ns" eth0)
  cpu_after=$(awk '{print $14 + $15}' "/proc/$ROUTER_PID/stat")
  # The router's own CPU time per packet delivered: comparable between rows even when other
  # load on a shared machine takes CPU from the router (then pps falls, this does not).
  NSPP[$row]=$(( (cpu_after - cpu_before) * 1000000000 / $(getconf CLK_TCK) / (total > 0 ? total : 1) ))
  SYSCALLS[$row]=$(syscalls_per_packet "$bin")
  SINK[$row]=$s GENR[$row]=$g
  # CPU seconds the router used per second of measurement, in percent of one core.
  CPU[$row]="$(( (cpu_after - cpu_before) * 100 / $(getconf CLK_TCK) / (WINDOW * REPS) ))%"
  router_status "$bin" > "$WORK/status.json"
  DROPS[$row]=$(python3 - "$WORK/status.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(" ".join("%s:%s=%d" % (p["stage"], k, v) for p in s["pipeline"] for k, v in p["drops"].items()) or "none")
PY
)
  RINGFULL[$row]=$(python3 -c 'import json,sys; print(sum(i["rx_ring_full"] for i in json.load(open(sys.argv[1]))["interfaces"]))' "$WORK/status.json")
  if [ "$mode" = steering ]; then
    # Proof the rate is the steering path's: packets the service steered.
    NOTE[$row]="; steered $(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(sum(v["forward_packets"] for v in (s.get("steering") or {}).get("services", [])))' "$WORK/status.json")"
    TRAFGEN_CFG="$WORK/udp64.cfg"
  elif [ "$mode" = nat ] || [ "$mode" = nat-syn ]; then
    # Proof the rate is the NAT path's: translations, set-ups, and the wrong-worker counter.
    NOTE[$row]="; $(python3 -c '
import json, sys
n = json.load(open(sys.argv[1]))["nat"]
w = n["workers"]
print("nat out %d in %d, sessions created %d, switch set-ups %d (not-setup %d), misdelivered %d"
      % (sum(x["out_translated"] for x in w), sum(x["in_translated"] for x in w), sum(x["created"] for x in w),
         n["switch"]["setups"], n["switch"]["not_setup"], sum(x["misdelivered"] for x in w)))' "$WORK/status.json")"
    TRAFGEN_CFG="$WORK/udp64.cfg"
  elif [ "$mode" != plain ]; then
    # Proof the rate is the redirect path's: packets the wccp-redirect stage took.
    NOTE[$row]="; wccp-redirect consumed $(python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))
print(sum(p.get("consumed", 0) for p in s["pipeline"] if p["stage"] == "wccp-redirect"))' "$WORK/status.json")"
    stop_pid "$CACHE_PID"; CACHE_PID=""
    rm -f "$WORK/swcache.sock"
  fi
  stop_pid "$ROUTER_PID"; ROUTER_PID=""
  rm -f "$WORK/swrouter.sock"
}

# swrouter rows in the order given (default: plain, redirect); a row named twice runs twice
# (e.g. BENCH_ROWS=kernel,mmap,base-mmap,mmap,base-mmap interleaves two builds).
ORDER=()
declare -A SEEN
for row in ${ROWS//,/ }; do
  case $row in generator | kernel | kernel-nat | kernel-nat-syn) continue ;; esac
  SEEN[$row]=$(( ${SEEN[$row]:-0} + 1 ))
  key=$row
  [ "${SEEN[$row]}" -gt 1 ] && key="$row#${SEEN[$row]}"
  case $row in
    pnet | mmap) router_row "$key" "$row" plain "$BIN" ;;
    base-mmap) router_row "$key" mmap plain "$BASE_BIN" ;;
    kernel-nat | kernel-nat-syn) continue ;;
    nat-syn-*) router_row "$key" "${row#nat-syn-}" nat-syn "$BIN" ;;
    gre-* | l2-* | steering-* | nat-*) router_row "$key" "${row#*-}" "${row%%-*}" "$BIN" ;;
  esac
  ORDER+=("$key")
done

ratio() { python3 -c "print(f'{$1/$2:.3f}' if $2 else 'n/a')"; }
label() {
  local r=${1%%#*} run=""
  [[ "$1" == *"#"* ]] && run=" #${1#*#}"
  case $r in
    kernel) echo "linux kernel forwarding" ;;
    pnet | mmap) echo "swrouter ($r)$run" ;;
    base-mmap) echo "swrouter (mmap, base binary)$run" ;;
    gre-*) echo "swrouter wccp gre (${r#gre-})$run" ;;
    l2-*) echo "swrouter wccp l2 (${r#l2-})$run" ;;
    steering-*) echo "swrouter steering (${r#steering-})$run" ;;
    kernel-nat) echo "linux nftables masquerade" ;;
    kernel-nat-syn) echo "linux masquerade, new TCP" ;;
    nat-syn-*) echo "swrouter nat new TCP (${r#nat-syn-})$run" ;;
    nat-*) echo "swrouter nat (${r#nat-})$run" ;;
  esac
}
echo
echo "generator alone (router namespace drops everything): $G_ONLY pps"
printf '%-30s %10s %14s %8s %10s %12s %14s %10s\n' "mode" "rx pps" "generator pps" "ratio" "router CPU" "CPU ns/pkt" "rtt p50/p99 µs" "syscalls/pkt"
want kernel-nat-syn && ORDER=(kernel-nat-syn "${ORDER[@]}")
want kernel-nat && ORDER=(kernel-nat "${ORDER[@]}")
want kernel && ORDER=(kernel "${ORDER[@]}")
for row in "${ORDER[@]}"; do
  printf '%-30s %10d %14d %8s %10s %12s %14s %10s\n' "$(label "$row")" "${SINK[$row]}" "${GENR[$row]}" "$(ratio "${SINK[$row]}" "$K_SINK")" "${CPU[$row]}" "${NSPP[$row]}" "${P50[$row]}/${P99[$row]}" "${SYSCALLS[$row]}"
done
echo "(rx pps: at the sink for plain forwarding and steering, at the cache's interface for the wccp rows; ratio to kernel plain forwarding;"
echo " CPU ns/pkt: the router process's CPU time over all windows / packets received, robust to other load)"
for row in "${ORDER[@]}"; do
  case ${row%%#*} in
    nat-syn-*) [ "$K_SYN" -gt 0 ] && echo "$(label "$row"): $(ratio "${SINK[$row]}" "$K_SYN") x linux masquerade (new TCP sessions/s)" ;;
    nat-*) [ "$K_NAT" -gt 0 ] && echo "$(label "$row"): $(ratio "${SINK[$row]}" "$K_NAT") x linux masquerade (established flows)" ;;
  esac
done
for row in "${ORDER[@]}"; do
  case $row in kernel | kernel-nat | kernel-nat-syn) continue ;; esac
  echo "$(label "$row"): drops ${DROPS[$row]}; rx-ring-full ${RINGFULL[$row]}${NOTE[$row]:-}"
done
