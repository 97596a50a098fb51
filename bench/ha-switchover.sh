#!/usr/bin/env bash
# HA switchover loss (issue 15): how much of a 1,000 packets/s UDP stream a failover or a
# planned switchover loses, swrouter against keepalived (Debian's, with Linux kernel
# forwarding) on the same topology, the one integration/tests/e2e/ha_sync.rs builds:
#
#   cli 10.0.1.10 --[lan bridge]-- eth0 r1 eth1 --[wan bridge]-- srv 10.0.2.10
#                               \-- eth0 r2 eth1 --/
#                                    r1 eth2 -- r2 eth2   (direct link, 10.9.0.1-2/24: [ha.sync])
#
# r1 (priority 200) is master, r2 (priority 100) backup of VRID 51 on the client side
# (virtual gateway 10.0.1.254) and VRID 52 on the server side (10.0.2.254). The client sends
# sequence-numbered datagrams to the server on an absolute 1 ms schedule; the server counts the
# distinct sequence numbers it got. Packets lost = milliseconds of outage.
#
# Rows (all by default; choose with BENCH_ROWS="sw-kill-10ms,ka-kill-10ms", comma-separated),
# each repeated REPS times from a fresh start of both nodes, the event 1 s into the stream:
#   sw-kill-10ms, sw-kill-1s    swrouter, kill -9 of the master, adverts every 10 ms / 1 s
#                               (1 s is the VRRP default);
#   sw-down-10ms, sw-down-1s    swrouter, node failure: every link of the master is taken down
#                               (ip link set ... down in its namespace; the process lives on);
#   sw-switch-10ms, sw-switch-1s
#                               swrouter, planned: `swrouter ha switchover` on the master;
#   ka-kill-10ms, ka-kill-1s    keepalived (vrrp_version 3, advert_int 0.01 = the smallest it
#                               accepts / 1 = its default), kill -9 of the master's keepalived
#                               (both processes). Its virtual addresses stay configured on the
#                               dead master's interfaces and the kernel there keeps forwarding,
#                               so the stream goes on through the old master until the new one
#                               announces itself: this is not a router failure;
#   ka-down-10ms, ka-down-1s    keepalived, node failure: the master's links are taken down;
#   ka-term-10ms, ka-term-1s    keepalived, planned: SIGTERM of the master's keepalived (it sends
#                               priority 0 and removes its addresses).
# At 1 s adverts an unplanned takeover comes Master_Down_Interval (3.61 s at priority 100)
# after the master's last advert, which was 0-1 s before the event: those rows spread over
# 2.6-3.6 s with the phase of the event, not with the implementation.
# Needs root, python3, keepalived (apt-get install -y keepalived) and a release build of
# swrouter (SWROUTER_BIN; the I/O backend is BENCH_IO_BACKEND, default mmap).
#
#   bench/ha-switchover.sh [REPS]
#   BENCH_ROWS=sw-kill-10ms,ka-down-10ms bench/ha-switchover.sh 1     # a quick check
set -euo pipefail
cd "$(dirname "$0")/.."
REPS=${1:-5}
BIN=${SWROUTER_BIN:-target/release/swrouter}
IO_BACKEND=${BENCH_IO_BACKEND:-mmap}
ALL_ROWS="sw-kill-10ms,sw-kill-1s,sw-down-10ms,sw-down-1s,sw-switch-10ms,sw-switch-1s,ka-kill-10ms,ka-kill-1s,ka-down-10ms,ka-down-1s,ka-term-10ms,ka-term-1s"
ROWS=${BENCH_ROWS:-$ALL_ROWS}
for r in ${ROWS//,/ }; do
  [[ ",$ALL_ROWS," == *",$r,"* ]] || { echo "unknown row $r; rows: $ALL_ROWS" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "bench/ha-switchover.sh needs root (network namespaces)" >&2; exit 1; }
[ -x "$BIN" ] || { echo "$BIN missing: cargo build --release --workspace --bins" >&2; exit 1; }
BIN=$(realpath "$BIN")
if [[ "$ROWS" == *ka-* ]]; then
  command -v keepalived >/dev/null || { echo "keepalived missing: apt-get install -y keepalived" >&2; exit 1; }
fi

P="swha$$"
BR="$P-br" CLI="$P-cli" SRV="$P-srv" R1="$P-r1" R2="$P-r2"
WORK=$(mktemp -d)
# Processes of the current repetition: swrouter or keepalived (parent) of r1 and r2, the
# stream's sender and receiver.
declare -A PID
stop_pid() {
  [ -n "${1:-}" ] || return 0
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
# Stops node N (1 or 2) whatever it runs; a keepalived that was stopped (SIGSTOP) or lost its
# parent is killed outright.
stop_node() {
  local n=$1 p=${PID[r$1]:-} child
  if [ -f "$WORK/ka$n.vrrp.pid" ]; then
    child=$(cat "$WORK/ka$n.vrrp.pid" 2>/dev/null || true)
    if [ -n "$p" ] && [ "$(ps -o state= -p "$p" 2>/dev/null)" = T ]; then kill -9 "$p" 2>/dev/null || true; fi
    stop_pid "$p"
    # keepalived's VRRP child, if its parent is gone without it.
    [ -n "$child" ] && kill -0 "$child" 2>/dev/null && kill -9 "$child" 2>/dev/null || true
    rm -f "$WORK/ka$n.pid" "$WORK/ka$n.vrrp.pid"
  else
    stop_pid "$p"
  fi
  PID[r$n]=""
}
cleanup() {
  stop_pid "${PID[tx]:-}"
  stop_pid "${PID[rx]:-}"
  stop_node 1
  stop_node 2
  for ns in "$CLI" "$SRV" "$R1" "$R2" "$BR"; do ip netns del "$ns" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

for ns in "$BR" "$CLI" "$SRV" "$R1" "$R2"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
for b in lan wan; do ip -n "$BR" link add "$b" type bridge; ip -n "$BR" link set "$b" up; done
# veth NS:IF -- bridge namespace PORT, enslaved to BRIDGE.
port() {
  ip -n "$1" link add "$2" type veth peer name "$3" netns "$BR"
  ip -n "$1" link set "$2" up
  ip -n "$BR" link set "$3" master "$4" up
}
port "$CLI" eth0 c0 lan
port "$SRV" eth0 s0 wan
port "$R1" eth0 r1l lan
port "$R1" eth1 r1w wan
port "$R2" eth0 r2l lan
port "$R2" eth1 r2w wan
ip -n "$R1" link add eth2 type veth peer name eth2 netns "$R2"
ip -n "$R1" link set eth2 up
ip -n "$R2" link set eth2 up
ip -n "$CLI" addr add 10.0.1.10/24 dev eth0
ip -n "$CLI" route add default via 10.0.1.254
ip -n "$SRV" addr add 10.0.2.10/24 dev eth0
ip -n "$SRV" route add default via 10.0.2.254
ip -n "$R1" addr add 10.9.0.1/24 dev eth2
ip -n "$R2" addr add 10.9.0.2/24 dev eth2
# The routers' data interfaces as both stacks start from them: ARP on, kernel forwarding on
# (used by keepalived's rows only: swrouter turns it off on the interfaces it takes over), no
# IPv6 (swrouter turns it off; keepalived does not use it).
reset_ifaces() {
  local ns=$1 i
  for i in eth0 eth1; do
    ip -n "$ns" link set "$i" arp on up
    ip netns exec "$ns" sysctl -qw "net.ipv4.conf.$i.forwarding=1" "net.ipv6.conf.$i.disable_ipv6=1"
  done
}
ns_of() { if [ "$1" = 1 ]; then echo "$R1"; else echo "$R2"; fi; }
reset_ifaces "$R1"
reset_ifaces "$R2"

# The sync key, as the key file must be: readable by its owner only.
printf '5f0e4c1d9a8b7c6d5e4f30211a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d\n' > "$WORK/ha.key"
chmod 600 "$WORK/ha.key"

# swrouter config of node N (1: priority 200, 2: 100) with adverts every MS milliseconds.
sw_conf() {
  local n=$1 ms=$2 prio=200 peer=2
  [ "$n" = 2 ] && prio=100 peer=1
  printf '[router]\nmanagement-socket = "%s"\nlog-level = "info"\nio-backend = "%s"\n' "$WORK/r$n.sock" "$IO_BACKEND"
  printf '\n[[interface]]\nname = "eth0"\naddress = "10.0.1.%d/24"\n' $((n + 1))
  printf '\n[[interface]]\nname = "eth1"\naddress = "10.0.2.%d/24"\n' $((n + 1))
  for v in "51 eth0 10.0.1.254" "52 eth1 10.0.2.254"; do
    set -- $v
    printf '\n[[ha.vrrp]]\ninterface = "%s"\nvrid = %d\npriority = %d\nvirtual-addresses = ["%s"]\nadvert-interval-ms = %d\naccept-mode = true\n' "$2" "$1" "$prio" "$3" "$ms"
  done
  printf '\n[ha.sync]\nlocal = "10.9.0.%d:7420"\npeer = "10.9.0.%d:7420"\nkey-file = "%s"\nnode-id = %d\npeer-node-id = %d\n' "$n" "$peer" "$WORK/ha.key" "$n" "$peer"
}

# keepalived config of node N with advert_int INT (seconds): the same two virtual routers,
# moved together by a sync group as a router pair's are.
ka_conf() {
  local n=$1 int=$2 prio=200 state=MASTER
  [ "$n" = 2 ] && prio=100 state=BACKUP
  printf 'global_defs {\n  vrrp_version 3\n  router_id swha-r%d\n  script_user root\n  enable_script_security\n  vrrp_garp_master_repeat 1\n  vrrp_garp_master_refresh 0\n}\n' "$n"
  printf 'vrrp_sync_group G {\n  group {\n    VI_51\n    VI_52\n  }\n}\n'
  for v in "51 eth0 10.0.1.254" "52 eth1 10.0.2.254"; do
    set -- $v
    printf 'vrrp_instance VI_%d {\n  state %s\n  interface %s\n  virtual_router_id %d\n  priority %d\n  advert_int %s\n  virtual_ipaddress {\n    %s/24\n  }\n}\n' "$1" "$state" "$2" "$1" "$prio" "$int" "$3"
  done
}

# "51:STATE 52:STATE role in_sync" of swrouter node N, or nothing while it is not up.
sw_state() {
  "$BIN" ha status --json -s "$WORK/r$1.sock" 2>/dev/null | python3 -c '
import json, sys
h = json.load(sys.stdin)
v = {x["vrid"]: x["state"] for x in h.get("vrrp", [])}
s = h.get("sync") or {}
print("51:%s 52:%s %s %s" % (v.get(51), v.get(52), h.get("role"), s.get("in_sync") and s.get("peer_alive")))' 2>/dev/null || true
}
# Waits up to 15 s until CHECK (a command) succeeds.
wait_until() {
  local what=$1
  shift
  for _ in $(seq 300); do "$@" && return 0; sleep 0.05; done
  echo "timed out waiting for $what" >&2
  return 1
}
sw_is() { [[ "$(sw_state "$1")" == "51:$2 52:$2"* ]]; }
sw_standby_in_sync() { [[ "$(sw_state 2)" == "51:backup 52:backup standby True" ]]; }
ka_is() { [ "$(grep -c "VI_5[12]) Entering $2 STATE" "$WORK/r$1.log" 2>/dev/null)" -ge 2 ]; }
ka_sees_r1_master() { grep -q "VI_5[12]) Entering BACKUP STATE" "$WORK/r2.log" && sleep "$1"; }

# Starts both nodes of STACK (sw or ka) with advert interval MS and waits until r1 is master
# and r2 backup (for swrouter: the standby in sync with the active).
start_pair() {
  local stack=$1 ms=$2 n ns int
  int=$(python3 -c "print($ms / 1000)")
  for n in 1 2; do
    ns=$(ns_of $n)
    if [ "$stack" = sw ]; then
      ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.forwarding=0
      sw_conf $n "$ms" > "$WORK/r$n.conf"
      ip netns exec "$ns" "$BIN" -c "$WORK/r$n.conf" > "$WORK/r$n.log" 2>&1 &
    else
      ip -n "$ns" addr add "10.0.1.$((n + 1))/24" dev eth0
      ip -n "$ns" addr add "10.0.2.$((n + 1))/24" dev eth1
      ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.forwarding=1
      ka_conf $n "$int" > "$WORK/ka$n.conf"
      ip netns exec "$ns" keepalived -n -l -D --vrrp -f "$WORK/ka$n.conf" \
        -p "$WORK/ka$n.pid" -r "$WORK/ka$n.vrrp.pid" > "$WORK/r$n.log" 2>&1 &
    fi
    PID[r$n]=$!
    if [ "$stack" = sw ]; then
      if [ $n = 1 ]; then
        wait_until "r1 master" sw_is 1 master || return 1
      else
        wait_until "r2 standby in sync" sw_standby_in_sync || return 1
      fi
    else
      if [ $n = 1 ]; then
        wait_until "r1 master" ka_is 1 MASTER || return 1
      else
        # keepalived starts a backup as backup; two adverts later it has seen the master's.
        wait_until "r2 backup" ka_sees_r1_master "$(python3 -c "print(2 * $int + 0.05)")" || return 1
        if grep -q "Entering MASTER STATE" "$WORK/r2.log"; then echo "r2 became master" >&2; return 1; fi
      fi
    fi
  done
  # The client's and the master's neighbour entries, as in steady traffic.
  ip netns exec "$CLI" ping -c 2 -i 0.2 -W 1 10.0.2.10 > /dev/null || { echo "no path through r1" >&2; return 1; }
}

stop_pair() {
  local n ns
  stop_node 1
  stop_node 2
  for n in 1 2; do
    ns=$(ns_of $n)
    # A swrouter that was killed could not hand its interfaces back (it had turned kernel ARP
    # and forwarding off there).
    reset_ifaces "$ns"
    ip -n "$ns" link set eth2 up
    ip -n "$ns" addr flush dev eth0
    ip -n "$ns" addr flush dev eth1
    ip -n "$ns" neigh flush all
    rm -f "$WORK/r$n.sock"
  done
  ip -n "$R1" addr replace 10.9.0.1/24 dev eth2
  ip -n "$R2" addr replace 10.9.0.2/24 dev eth2
  ip -n "$CLI" neigh flush all
  ip -n "$SRV" neigh flush all
}

# The event of a row on master r1.
fail() {
  local stack=$1 event=$2 parent child
  case "$stack-$event" in
    sw-kill)
      kill -9 "${PID[r1]}"
      wait "${PID[r1]}" 2>/dev/null || true
      ;;
    sw-switch) "$BIN" ha switchover -s "$WORK/r1.sock" > /dev/null ;;
    ka-kill)
      # Both processes die at once: the parent is stopped first so it cannot restart its
      # VRRP child (or have it exit cleanly) in between.
      parent=${PID[r1]} child=$(cat "$WORK/ka1.vrrp.pid")
      kill -STOP "$parent"
      kill -9 "$child" "$parent"
      wait "$parent" 2>/dev/null || true
      ;;
    ka-term) kill -TERM "${PID[r1]}" ;;
    *-down) printf 'link set eth0 down\nlink set eth1 down\nlink set eth2 down\n' | ip -n "$R1" -batch - ;;
  esac
}

# One repetition: a SECS-second stream with the event 1 s in; leaves "lost longest-gap" in
# $WORK/rx.out.
stream() {
  local stack=$1 event=$2 secs=$3 total=$(($3 * 1000))
  rm -f "$WORK/rx.ready" "$WORK/tx.started" "$WORK/rx.stop" "$WORK/rx.out"
  ip netns exec "$SRV" python3 - "$total" "$WORK" > "$WORK/rx.out" <<'PY' &
import os, socket, sys
total, work = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind(("10.0.2.10", 5001))
s.settimeout(0.05)
open(os.path.join(work, "rx.ready"), "w").close()
seen = set()
while not os.path.exists(os.path.join(work, "rx.stop")):
    try:
        d, _ = s.recvfrom(64)
        seen.add(int(d))
    except socket.timeout:
        pass
got = [i in seen for i in range(total)]
gap = run = 0
for g in got:
    run = 0 if g else run + 1
    gap = max(gap, run)
print(total - sum(got), gap)
PY
  PID[rx]=$!
  wait_until "receiver" test -e "$WORK/rx.ready"
  ip netns exec "$CLI" python3 - "$total" "$WORK" <<'PY' &
import os, socket, sys, time
total, work = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t0 = time.time()
open(os.path.join(work, "tx.started"), "w").close()
for i in range(total):
    d = t0 + i / 1000.0 - time.time()
    if d > 0:
        time.sleep(d)
    try:
        s.sendto(b"%d" % i, ("10.0.2.10", 5001))
    except OSError:
        pass  # counted as lost: the receiver never sees it
PY
  PID[tx]=$!
  wait_until "sender" test -e "$WORK/tx.started"
  sleep 1
  fail "$stack" "$event"
  wait "${PID[tx]}"
  PID[tx]=""
  sleep 0.3
  touch "$WORK/rx.stop"
  wait "${PID[rx]}"
  PID[rx]=""
}

# How often node N of STACK became master (the most of its two virtual routers; 1 for a
# swrouter that is gone: it was master once, at the start).
masters() {
  if [ "$1" = sw ]; then
    "$BIN" ha status --json -s "$WORK/r$2.sock" 2>/dev/null \
      | python3 -c 'import json,sys; print(max(v["became_master"] for v in json.load(sys.stdin)["vrrp"]))' 2>/dev/null \
      || echo 1
  else
    echo $(( ($(grep -c "VI_5[12]) Entering MASTER STATE" "$WORK/r$2.log") + 1) / 2 ))
  fi
}
# Node N of STACK became master of both virtual routers at least once.
took_over() {
  if [ "$1" = sw ]; then
    "$BIN" ha status --json -s "$WORK/r$2.sock" 2>/dev/null \
      | python3 -c 'import json,sys; sys.exit(min(v["became_master"] for v in json.load(sys.stdin)["vrrp"]) < 1)' 2>/dev/null
  else
    ka_is "$2" MASTER
  fi
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A RESULT GAPS FLAPS KEPT MOVED
echo "HA switchover benchmark: 1,000 packets/s, $REPS repetitions per row; rows $ROWS" >&2
for row in ${ROWS//,/ }; do
  IFS=- read -r stack event interval <<< "$row"
  ms=10
  [ "$interval" = 1s ] && ms=1000
  # Long enough for the slowest takeover (Master_Down_Interval 3.6 s at 1 s adverts) to end
  # well inside the stream.
  secs=3
  [ "$ms" = 1000 ] && secs=6
  losses=() gaps=()
  for i in $(seq "$REPS"); do
    if ! start_pair "$stack" "$ms"; then
      tail -n 30 "$WORK/r1.log" "$WORK/r2.log" >&2 || true
      exit 1
    fi
    stream "$stack" "$event" "$secs"
    read -r lost gap < "$WORK/rx.out"
    # The backup must have taken over: else the row measured nothing.
    wait_until "r2 master" took_over "$stack" 2 || { tail -n 30 "$WORK/r2.log" >&2; exit 1; }
    # One takeover is expected; a node that became master more often flapped (a late advert
    # of a live master, before or after the event; the stream went on through either node).
    takeovers=$(( $(masters "$stack" 1) + $(masters "$stack" 2) - 1 ))
    [ "$takeovers" -gt 1 ] && FLAPS[$row]=$(( ${FLAPS[$row]:-0} + 1 ))
    note=""
    if [ "$row" = "${row#ka-kill}" ]; then :; else
      # What the killed keepalived left: its virtual addresses, and a kernel that forwards.
      if ip -n "$R1" -br addr show dev eth0 | grep -q 10.0.1.254 && ip -n "$R1" -br addr show dev eth1 | grep -q 10.0.2.254; then
        KEPT[$row]=$(( ${KEPT[$row]:-0} + 1 ))
        note="; the killed master still holds both virtual addresses"
      fi
      if ip -n "$CLI" neigh show 10.0.1.254 | grep -qi "$(ip -n "$R2" -br link show eth0 | awk '{print $3}')"; then
        MOVED[$row]=$(( ${MOVED[$row]:-0} + 1 ))
        note="$note; the client's gateway entry is r2's"
      fi
    fi
    printf '  %-16s rep %d: lost %5d of %d (longest gap %d ms), mastership moved %d time(s)%s\n' "$row" "$i" "$lost" "$((secs * 1000))" "$gap" "$takeovers" "$note" >&2
    losses+=("$lost") gaps+=("$gap")
    stop_pair
  done
  sorted=$(printf '%s\n' "${losses[@]}" | sort -n)
  RESULT[$row]="$(head -n 1 <<< "$sorted") | $(median <<< "$sorted") | $(tail -n 1 <<< "$sorted")"
  GAPS[$row]=$(printf '%s\n' "${gaps[@]}" | sort -n | tail -n 1)
done

label() {
  local stack event interval who what
  IFS=- read -r stack event interval <<< "$1"
  if [ "$stack" = sw ]; then who="swrouter ($IO_BACKEND)"; else who="keepalived + kernel"; fi
  case "$stack-$event" in
    sw-kill) what="kill -9 of the master" ;;
    ka-kill) what="kill -9 of the master's keepalived" ;;
    *-down) what="master's links down" ;;
    sw-switch) what="planned: ha switchover" ;;
    ka-term) what="planned: SIGTERM (priority 0)" ;;
  esac
  echo "| $who | $what | ${interval%%[a-z]*} ${interval##*[0-9]} |"
}
echo
echo "| router | event | advert interval | lost min (ms) | median | max | longest gap (ms) | flapped |"
echo "|---|---|---|---:|---:|---:|---:|---:|"
for row in ${ROWS//,/ }; do
  echo "$(label "$row") ${RESULT[$row]} | ${GAPS[$row]} | ${FLAPS[$row]:-0} |"
done
echo
echo "1,000 packets/s client -> server through the virtual gateways; $REPS repetitions per row; lost = packets = ms of outage;"
echo "flapped: repetitions in which mastership moved more than once (a late advert of a live master)."
for row in ${ROWS//,/ }; do
  [ "$row" = "${row#ka-kill}" ] && continue
  echo "$row: the killed master kept both virtual addresses in ${KEPT[$row]:-0} of $REPS repetitions (its kernel forwards on); the client's gateway entry had moved to r2 in ${MOVED[$row]:-0}."
done
