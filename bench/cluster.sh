#!/usr/bin/env bash
# Router cluster throughput (issue 16), measured in one run on one topology: 1, 2 and 3
# swrouter nodes sharing the traffic by distribution id, and the cost of handing ids over.
#
#              [lan bridge]                      [wan bridge]
#   gen ------+----------------- eth0 r1 eth1 ------+---------- sink
#   (trafgen) +----------------- eth0 r2 eth1 ------+           (10.0.2.2)
#             +----------------- eth0 r3 eth1 ------+
#                                     eth2 (kernel: 10.8.0.N, the sync mesh)
#                                      |
#                                 [ctl bridge] ---- etcd (one member, 10.8.0.100)
#
# The bridges live in their own namespace; lan and wan have multicast snooping off, so a frame
# to the cluster MAC (a multicast MAC) is flooded to every node, as a switch would. Each node
# runs `io-backend = "mmap"`, `workers = 1`, plain routing (no [nat]) and `[cluster]` with eth0
# and eth1 as cluster interfaces and the hosts' gateway 10.0.1.254 as eth0's cluster address.
# The generator sends 64-byte UDP frames (60 B + FCS) 10.0.1.2 -> 10.0.2.2:9 from a random source
# port (65,536 values, so the 256 distribution ids are evenly loaded) straight to the cluster
# MAC, read from `swrouter cluster status --json` (.plane.cluster_mac). Every node receives
# every frame, forwards those whose id it owns and drops the others as `cluster-foreign`. The
# sink counts and drops the frames in an nftables netdev ingress chain (no ICMP back); the rate
# is what that counter saw.
#
# Rows (all by default; choose with BENCH_ROWS="1,2,3", comma-separated; they run in this order):
#   generator  no node running (their bridge ports down): what the generator sends through the
#              lan bridge alone, so a generator-bound result is visible;
#   1, 2, 3    that many nodes, started one after the other; a row starts when every node shows
#              the same epoch, the table gives every id to a running node and no id is moving
#              (releasing, awaiting, or with NAT work pending);
#   handover   2 nodes forward the generator's full load for HANDOVER_SECONDS (default
#              max(WINDOW, 6)); 1 s in, node 3 starts and takes its 85 ids from the two others.
#              Reported from `swrouter cluster status --json` of each node: the reallocation
#              (.node.last_realloc: epoch, ids gained/lost, duration_ms from applying the
#              table to the node's last move done, CAS round trips), the data plane's handover
#              counters (.plane.frames: held, released, handed, hold_full, hold_dropped), the
#              table CASes (.node.cas_sent, summed) and all etcd round trips
#              (.node.etcd.round_trips: CAS, keepalives, node 3's registration, ...) during the
#              row, the wall time from starting node 3 to the settled table (polled, so
#              coarse: ~0.1 s), the frames the sink got vs what the generator sent and vs what
#              the nodes handled (the new owner drops the old owners' hand-over copies of
#              frames it handled itself as `cluster-duplicate`, so none is sent twice). With
#              HANDOVER_CAPTURE=1 tcpdump records the row at the sink and the duplicates are
#              counted exactly (each frame carries 64 random bits: IPv4 id, source port and 4
#              payload bytes); the capture costs CPU, so the row's rate is then lower.
# WINDOW-second windows (after a 1 s warm-up in which the nodes resolve the sink's MAC), REPS
# repetitions, medians; the ratio is to the 1-node row. After the table, per row: each CPU's
# busy and softirq time, and per node the frames to the cluster MAC it handled (owned) and
# dropped as foreign (owned + foreign = every frame, on every node), its CPU time, rx-ring-full
# and any other drops; CPU figures are per second of measurement.
#
# What limits the result on a 2-core machine: the generator (trafgen, CPU 0) shares the machine
# with the lan bridge, N swrouters (all pinned to CPU 1, ROUTER_CPUS to change) and the sink.
# On veth, a receiver's kernel work runs on the sender's CPU: the lan bridge's flooding and the
# copy of every frame into every node's receive ring run in trafgen's softirq on CPU 0, so each
# node added slows the generator (CPU 0's softirq share grows with N); the forwarded frames'
# transmit, the wan bridge and the sink run on CPU 1 with the nodes. Both CPUs are saturated in
# every node row and the generator sends only what the nodes take (sink = generator, no ring
# overflow). Every node receives and classifies every frame, so a node's receive+drop cost
# grows with the total rate, not with its share: on one machine N nodes have no more CPU than
# one, and the rows show the cluster's overhead (N copies of every frame, the foreign drops),
# not the scale-out a cluster of N machines gets. Other load on the machine lowers every row.
# Needs root, trafgen (netsniff-ng), nft, etcd (Debian's etcd-server), python3, and a release
# build of swrouter.
#
#   bench/cluster.sh [WINDOW_SECONDS] [REPS]          # defaults 10 3: about 3 minutes
#   BENCH_ROWS=handover HANDOVER_CAPTURE=1 bench/cluster.sh   # count duplicates at the sink
#   BENCH_ROWS=1,2,3 bench/cluster.sh 2 1              # a quick check
#   SWROUTER_BIN=/path/to/swrouter bench/cluster.sh 3 3
set -euo pipefail
cd "$(dirname "$0")/.."
WINDOW=${1:-10}
REPS=${2:-3}
BIN=${SWROUTER_BIN:-target/release/swrouter}
ETCD_BIN=${ETCD_BIN:-/usr/bin/etcd}
ROUTER_CPUS=${ROUTER_CPUS:-1}
HANDOVER_SECONDS=${HANDOVER_SECONDS:-$((WINDOW > 6 ? WINDOW : 6))}
ALL_ROWS="generator,1,2,handover,3"
ROWS=${BENCH_ROWS:-$ALL_ROWS}
want() { [[ ",$ROWS," == *",$1,"* ]]; }
for r in ${ROWS//,/ }; do
  [[ ",$ALL_ROWS," == *",$r,"* ]] || { echo "unknown row $r; rows: $ALL_ROWS" >&2; exit 1; }
done
[ "$(id -u)" -eq 0 ] || { echo "bench/cluster.sh needs root (network namespaces)" >&2; exit 1; }
command -v trafgen >/dev/null || { echo "trafgen missing: apt-get install -y netsniff-ng" >&2; exit 1; }
command -v nft >/dev/null || { echo "nft missing: apt-get install -y nftables" >&2; exit 1; }
[ -x "$ETCD_BIN" ] || { echo "$ETCD_BIN missing: apt-get install -y etcd-server" >&2; exit 1; }
[ -x "$BIN" ] || { echo "$BIN missing: cargo build --release --bin swrouter" >&2; exit 1; }
[ "$HANDOVER_SECONDS" -ge 3 ] || { echo "HANDOVER_SECONDS must be at least 3" >&2; exit 1; }

P="swcl$$"
BR="$P-br" GEN="$P-gen" SNK="$P-snk" ETC="$P-etcd"
NODES=3
WORK=$(mktemp -d)
declare -A PID
ETCD_PID=""
stop_pid() { [ -n "$1" ] && kill "$1" 2>/dev/null && wait "$1" 2>/dev/null || true; }
cleanup() {
  local n
  for n in $(seq "$NODES"); do stop_pid "${PID[$n]:-}"; done
  stop_pid "$ETCD_PID"
  for ns in "$GEN" "$SNK" "$ETC" "$BR" $(for n in $(seq "$NODES"); do echo "$P-r$n"; done); do
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- topology -----------------------------------------------------------------------------
for ns in "$BR" "$GEN" "$SNK" "$ETC" $(for n in $(seq "$NODES"); do echo "$P-r$n"; done); do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  # No IPv6: the kernels' router solicitations and MLD reports would count as sent frames.
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
done
for b in lan wan ctl; do
  ip -n "$BR" link add "$b" type bridge
  [ "$b" != ctl ] && ip -n "$BR" link set "$b" type bridge mcast_snooping 0
  ip -n "$BR" link set "$b" up
done
# plug NS DEV PORT BRIDGE: a veth from NS's DEV to bridge BRIDGE's port PORT.
plug() {
  ip -n "$BR" link add "$3" type veth peer name "$2" netns "$1"
  ip -n "$BR" link set "$3" master "$4"
  ip -n "$BR" link set "$3" up
  ip -n "$1" link set "$2" up
}
plug "$GEN" eth0 gen lan
plug "$SNK" eth0 snk wan
plug "$ETC" eth0 etcd ctl
for n in $(seq "$NODES"); do
  plug "$P-r$n" eth0 "r${n}l" lan
  plug "$P-r$n" eth1 "r${n}w" wan
  plug "$P-r$n" eth2 "r${n}c" ctl
  ip -n "$P-r$n" addr add "10.8.0.$n/24" dev eth2
  # A node's lan and wan ports stay down until it starts, so the rows before it do not pay for
  # flooding frames to a namespace that drops them.
  ip -n "$BR" link set "r${n}l" down
  ip -n "$BR" link set "r${n}w" down
done
ip -n "$GEN" addr add 10.0.1.2/24 dev eth0
ip -n "$GEN" route add default via 10.0.1.254
ip -n "$SNK" addr add 10.0.2.2/24 dev eth0
ip -n "$SNK" route add default via 10.0.2.254
ip -n "$ETC" addr add 10.8.0.100/24 dev eth0
# The sink counts and drops the generator's frames at ingress, before any protocol work (so no
# ICMP port-unreachable goes back); ARP passes, uncounted.
ip netns exec "$SNK" nft -f - <<'NFT'
table netdev bench {
  chain ingress {
    type filter hook ingress device "eth0" priority 0;
    udp dport 9 counter drop
  }
}
NFT

# --- etcd (one member; flags as netlab::etcd's) ---------------------------------------------
ip netns exec "$ETC" "$ETCD_BIN" --name e1 --data-dir "$WORK/etcd" \
  --listen-client-urls http://10.8.0.100:2379 --advertise-client-urls http://10.8.0.100:2379 \
  --listen-peer-urls http://10.8.0.100:2380 --initial-advertise-peer-urls http://10.8.0.100:2380 \
  --initial-cluster e1=http://10.8.0.100:2380 --initial-cluster-token "$P" \
  --initial-cluster-state new --unsafe-no-fsync --logger zap --log-level warn 2>"$WORK/etcd.log" &
ETCD_PID=$!
for i in $(seq 200); do
  ip netns exec "$ETC" curl -s -m 1 http://10.8.0.100:2379/health 2>/dev/null | grep -q '"health":"true"' && break
  [ "$i" -eq 200 ] && { echo "etcd did not become healthy within 20 s" >&2; cat "$WORK/etcd.log" >&2; exit 1; }
  sleep 0.1
done

# --- nodes ----------------------------------------------------------------------------------
python3 -c 'import os; print(os.urandom(32).hex())' > "$WORK/cluster.key"
chmod 600 "$WORK/cluster.key"
for n in $(seq "$NODES"); do
  cat > "$WORK/r$n.conf" <<CONF
[router]
management-socket = "$WORK/r$n.sock"
log-level = "info"
io-backend = "mmap"
workers = 1

[[interface]]
name = "eth0"
address = "10.0.1.$((10 + n))/24"

[[interface]]
name = "eth1"
address = "10.0.2.$((10 + n))/24"

[cluster]
name = "bench"
node-id = $n
etcd = ["http://10.8.0.100:2379"]
sync-local = "10.8.0.$n:7788"
key-file = "$WORK/cluster.key"

[[cluster.interface]]
name = "eth0"
addresses = ["10.0.1.254"]

[[cluster.interface]]
name = "eth1"
addresses = []
CONF
done

RUNNING=()
cstatus() { "$BIN" cluster status --json -s "$WORK/r$1.sock" 2>/dev/null; }
# Prints "yes" when every running node shows the same epoch and table, the table names exactly
# the running nodes and no id is unowned, releasing, awaiting or has NAT work pending.
settled() {
  local n
  for n in "${RUNNING[@]}"; do
    cstatus "$n" > "$WORK/settle-$n.json" || { echo no; return; }
  done
  python3 - "$WORK" "${RUNNING[@]}" <<'PY'
import json, sys
work, nodes = sys.argv[1], [int(n) for n in sys.argv[2:]]
seen = None
for n in nodes:
    s = json.load(open(f"{work}/settle-{n}.json"))["node"]
    owners = s["owners"]
    if (None in owners or set(owners) != set(nodes) or s["releasing"] or s["awaiting"]
            or s["pending_nat_work"] or sum(m["ids"] for m in s["members"]) != 256):
        print("no"); sys.exit()
    if seen is None:
        seen = (s["epoch"], owners)
    elif seen != (s["epoch"], owners):
        print("no"); sys.exit()
print("yes")
PY
}
wait_settled() {
  local i
  for i in $(seq 300); do
    [ "$(settled)" = yes ] && return 0
    sleep 0.05
  done
  echo "the cluster of nodes ${RUNNING[*]} did not settle within about 30 s" >&2
  for n in "${RUNNING[@]}"; do
    echo "---- r$n ----" >&2
    "$BIN" cluster status -s "$WORK/r$n.sock" >&2 || true
    tail -n 30 "$WORK/r$n.log" >&2 || true
  done
  exit 1
}
# Starts node N (its bridge ports up) and waits for its management socket.
start_node() {
  local n=$1
  ip -n "$BR" link set "r${n}l" up
  ip -n "$BR" link set "r${n}w" up
  ip netns exec "$P-r$n" taskset -c "$ROUTER_CPUS" "$BIN" -c "$WORK/r$n.conf" 2>"$WORK/r$n.log" &
  PID[$n]=$!
  for _ in $(seq 100); do cstatus "$n" >/dev/null && break; sleep 0.1; done
  cstatus "$n" >/dev/null || { echo "node $n did not come up:" >&2; cat "$WORK/r$n.log" >&2; exit 1; }
  RUNNING+=("$n")
}
# Starts nodes until K run, each settling before the next.
nodes_up_to() {
  while [ "${#RUNNING[@]}" -lt "$1" ]; do
    start_node $((${#RUNNING[@]} + 1))
    wait_settled
  done
}

mac() { ip -n "$1" -br link show "$2" | awk '{print $3}'; }
hexmac() { echo "$1" | sed 's/^/0x/; s/:/, 0x/g'; }
rx() { ip -n "$1" -s -j link show "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["rx"]["packets"])'; }
tx() { ip -n "$1" -s -j link show "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["stats64"]["tx"]["packets"])'; }
sink_rx() { ip netns exec "$SNK" nft list chain netdev bench ingress | awk '/counter packets/ {for (i = 1; i < NF; i++) if ($i == "packets") print $(i + 1)}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The cluster MAC is derived from the cluster's name, the same on every node: ask a node. Before
# any node runs (the generator row) nobody listens, so any MAC of that kind serves.
CLUSTER_MAC=03:00:5e:c1:00:00
GEN_MAC=$(mac "$GEN" eth0)
# 60-byte frame: Ethernet to the cluster MAC, IPv4 10.0.1.2 -> 10.0.2.2 (TTL 64), UDP random
# source port -> 9, 18 bytes payload (4 random, so a frame is told from another by 64 random bits:
# IPv4 id, source port and these); IPv4 checksum computed by trafgen, UDP checksum 0.
write_cfg() {
  cat > "$WORK/udp64.cfg" <<CFG
{
  $(hexmac "$CLUSTER_MAC"), $(hexmac "$GEN_MAC"), c16(0x0800),
  0x45, 0x00, c16(46), drnd(2), c16(0x0000), 64, 17, csumip(14, 33),
  10, 0, 1, 2, 10, 0, 2, 2,
  drnd(2), c16(9), c16(26), c16(0),
  drnd(4), fill(0x5a, 14)
}
CFG
}
write_cfg
trafgen_run() {
  ip netns exec "$GEN" timeout --signal=INT "$1" taskset -c 0 trafgen --dev eth0 --conf "$WORK/udp64.cfg" \
    --cpus 1 --no-sock-mem --notouch-irq >/dev/null 2>&1 || true
}

# Snapshot DIR: every running node's `cluster status --json` (N.cluster.json), `status --json`
# (N.status.json) and CPU ticks (N.cpu); stats.py compares two snapshots.
snapshot() {
  local n
  mkdir -p "$1"
  for n in "${RUNNING[@]}"; do
    cstatus "$n" > "$1/$n.cluster.json" || true
    "$BIN" status --json -s "$WORK/r$n.sock" > "$1/$n.status.json" 2>/dev/null || true
    cpu_ticks "${PID[$n]}" > "$1/$n.cpu"
  done
}
cat > "$WORK/stats.py" <<'PY'
import json, os, sys

def node(d, n):
    """A node's counters in snapshot d (zeros when it was not running)."""
    try:
        c = json.load(open(f"{d}/{n}.cluster.json"))
        s = json.load(open(f"{d}/{n}.status.json"))
        cpu = int(open(f"{d}/{n}.cpu").read())
    except (OSError, ValueError):
        return None
    f, nd = c["plane"]["frames"], c["node"]
    r = dict(f)
    r.update(cas_sent=nd["cas_sent"], round_trips=nd["etcd"]["round_trips"], epoch=nd["epoch"], cpu=cpu,
             ring_full=sum(i["rx_ring_full"] for i in s["interfaces"]))
    drops = {}
    for p in s["pipeline"]:
        for k, v in p["drops"].items():
            drops[f"{p['stage']}:{k}"] = v
    r["drops"] = drops
    r["last_realloc"] = nd["last_realloc"]
    return r

def delta(before, after, n):
    a, b = node(after, n), node(before, n)
    if a is None:
        return None
    if b is None:
        b = {k: 0 for k in a}
        b["drops"] = {}
        b["epoch"] = None
    d = {k: a[k] - b[k] for k in a if k not in ("drops", "epoch", "last_realloc")}
    d["drops"] = {k: v - b["drops"].get(k, 0) for k, v in a["drops"].items() if v - b["drops"].get(k, 0)}
    d["epoch"] = (b["epoch"], a["epoch"])
    d["last_realloc"] = a["last_realloc"]
    return d

def drops_text(d):
    # The foreign drops are every node's normal share: shown as "foreign" already.
    x = {k: v for k, v in d["drops"].items() if k != "cluster:cluster-foreign"}
    return ", ".join(f"{k}={v}" for k, v in sorted(x.items())) or "none"

mode, before, after = sys.argv[1], sys.argv[2], sys.argv[3]
nodes = sorted({int(f.split(".")[0]) for f in os.listdir(after) if f[0].isdigit()})
if mode == "row":
    hz, secs = int(sys.argv[4]), int(sys.argv[5])
    out = []
    # Where the machine's time went: /proc/stat's user nice system idle iowait irq softirq ...
    cpus = []
    for b, a in zip(open(f"{before}/stat"), open(f"{after}/stat")):
        d = [int(y) - int(x) for x, y in zip(b.split()[1:], a.split()[1:])]
        busy = sum(d[:8]) - d[3] - d[4]
        cpus.append(f"{a.split()[0]} busy {100 * busy / hz / secs:.0f}% (softirq {100 * d[6] / hz / secs:.0f}%)")
    # Per second of measurement, like the nodes' CPU: the gaps between windows count too, so a
    # saturated CPU shows a little over 100%.
    out.append("  machine: " + ", ".join(cpus))
    for n in nodes:
        d = delta(before, after, n)
        if d is None:
            continue
        total = d["owned"] + d["foreign"]
        epoch = "" if d["epoch"][0] == d["epoch"][1] else f", EPOCH CHANGED {d['epoch'][0]} -> {d['epoch'][1]}"
        out.append(f"  r{n}: owned {d['owned']} ({100 * d['owned'] / max(1, total):.1f}%), foreign {d['foreign']}, "
                   f"owned+foreign {total}; CPU {100 * d['cpu'] / hz / secs:.0f}%; rx-ring-full {d['ring_full']}; "
                   f"other drops {drops_text(d)}{epoch}")
    print("\n".join(out))
else:
    settle_ms, got, sent, secs = (int(x) for x in sys.argv[4:8])
    print(f"  node 3 started 1 s into a {secs} s load on 2 nodes; the table was settled on all three "
          f"{settle_ms} ms after its start (polled every ~0.1 s: coarse)")
    keys = ("held", "released", "handed", "hold_full", "hold_dropped", "cas_sent", "round_trips", "ring_full")
    tot = dict.fromkeys(keys, 0)
    for n in nodes:
        d = delta(before, after, n)
        r = d["last_realloc"] or {}
        for k in keys:
            tot[k] += d[k]
        dur = r.get("duration_ms")
        print(f"  r{n}: epoch {r.get('epoch')} gained {r.get('gained')} lost {r.get('lost')} ids, moves done "
              f"{'in %.1f ms' % dur if dur is not None else 'NOT FINISHED'}, CAS round trips {r.get('cas_round_trips')}; "
              f"frames held {d['held']} (released {d['released']}, handed {d['handed']}) hold-full {d['hold_full']} "
              f"hold-dropped {d['hold_dropped']}; owned {d['owned']} foreign {d['foreign']}; "
              f"rx-ring-full {d['ring_full']}; other drops {drops_text(d)}")
    print(f"  all nodes: held {tot['held']} (released {tot['released']}, handed {tot['handed']}), lost to hold-full "
          f"{tot['hold_full']}, hold-dropped {tot['hold_dropped']}, rx-ring-full {tot['ring_full']}; table CASes sent "
          f"{tot['cas_sent']}; etcd round trips {tot['round_trips']} (every request of every node during the row: "
          f"the CAS, keepalives, node 3's lease, registration and reads)")
    handled = sum(delta(before, after, n)[k] for n in nodes for k in ("owned", "released", "handed"))
    dups = sum(delta(before, after, n).get("duplicates", 0) for n in nodes)
    print(f"  sink got {got} of {sent} frames the generator sent ({got - sent:+d}; "
          f"{got // secs} pps delivered over the row); handled by the nodes (owned + released + handed "
          f"- hand-over copies the new owner had handled already, dropped as cluster-duplicate: {dups}): "
          f"{handled - dups} ({handled - dups - sent:+d}: frames handled twice minus frames no node handled)")
PY

# One window: trafgen for WINDOW seconds on CPU 0; prints "sink-pps generator-pps".
measure() {
  local before_rx before_tx after_rx after_tx
  before_rx=$(sink_rx); before_tx=$(tx "$GEN" eth0)
  trafgen_run "$WINDOW"
  sleep 0.5
  after_rx=$(sink_rx); after_tx=$(tx "$GEN" eth0)
  echo "$(( (after_rx - before_rx) / WINDOW )) $(( (after_tx - before_tx) / WINDOW ))"
}

echo "cluster benchmark: 64-byte UDP to the cluster MAC, ${WINDOW}s windows, $REPS repetitions, medians; rows $ROWS" >&2
declare -A SINK GENR NODELINES
ORDER=()

# REPS windows of row NAME with the nodes that run; records the medians and per-node deltas.
run_row() {
  local name=$1 sink=() gen=() i s g
  snapshot "$WORK/before-$name"
  grep -E '^cpu[01] ' /proc/stat > "$WORK/before-$name/stat"
  for i in $(seq "$REPS"); do
    read -r s g < <(measure)
    sink+=("$s"); gen+=("$g")
    printf '  %-9s rep %d: sink %8d pps   generator %8d pps\n' "$name" "$i" "$s" "$g" >&2
  done
  snapshot "$WORK/after-$name"
  grep -E '^cpu[01] ' /proc/stat > "$WORK/after-$name/stat"
  SINK[$name]=$(printf '%s\n' "${sink[@]}" | median)
  GENR[$name]=$(printf '%s\n' "${gen[@]}" | median)
  ORDER+=("$name")
  NODELINES[$name]=$(python3 "$WORK/stats.py" row "$WORK/before-$name" "$WORK/after-$name" "$(getconf CLK_TCK)" "$((WINDOW * REPS))")
}

if want generator; then run_row generator; fi
for k in 1 2 handover 3; do
  want "$k" || continue
  if [ "$k" != handover ]; then
    nodes_up_to "$k"
    CLUSTER_MAC=$(cstatus 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["plane"]["cluster_mac"])')
    write_cfg
    trafgen_run 1   # warm-up: the nodes resolve the sink's MAC (a cold queue overflows)
    run_row "$k"
    continue
  fi
  # --- handover: node 3 joins two nodes under the generator's load ---------------------------
  [ "${#RUNNING[@]}" -le 2 ] || { echo "handover needs exactly 2 running nodes" >&2; exit 1; }
  nodes_up_to 2
  CLUSTER_MAC=$(cstatus 1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["plane"]["cluster_mac"])')
  write_cfg
  trafgen_run 1
  snapshot "$WORK/before-handover"
  CAP=""
  if [ "${HANDOVER_CAPTURE:-0}" = 1 ]; then
    ip netns exec "$SNK" tcpdump -i eth0 -B 65536 -s 64 -w "$WORK/handover.pcap" 'udp dst port 9' 2>"$WORK/tcpdump.log" &
    CAP=$!
    sleep 1
  fi
  before_rx=$(sink_rx); before_tx=$(tx "$GEN" eth0)
  trafgen_run "$HANDOVER_SECONDS" &
  TG=$!
  sleep 1
  t0=$(date +%s%N)
  start_node 3
  wait_settled
  t1=$(date +%s%N)
  wait "$TG"
  sleep 0.5
  after_rx=$(sink_rx); after_tx=$(tx "$GEN" eth0)
  if [ -n "$CAP" ]; then
    kill -INT "$CAP"; wait "$CAP" || true
    CAPTURE_REPORT=$(python3 - "$WORK/handover.pcap" <<'PY'
import struct, sys
from collections import Counter
data = open(sys.argv[1], "rb").read()
# pcap: 24-byte header, then per packet a 16-byte record header and the captured bytes.
off, seen = 24, Counter()
while off + 16 <= len(data):
    incl = struct.unpack_from("<I", data, off + 8)[0]
    f = data[off + 16: off + 16 + incl]
    off += 16 + incl
    if len(f) >= 46:
        seen[(f[18:20], f[34:36], f[42:46])] += 1   # IPv4 id, UDP source port, random payload
dups = sum(c - 1 for c in seen.values() if c > 1)
print(f"  capture at the sink: {sum(seen.values())} frames, {len(seen)} distinct, {dups} duplicates "
      f"(a frame forwarded by two nodes)")
PY
)
    CAPTURE_REPORT+=$'\n'"  tcpdump: $(grep -E 'dropped by kernel' "$WORK/tcpdump.log" || echo '?')"
  fi
  # The reallocation's moves may finish after the table looks settled: wait for duration_ms.
  for _ in $(seq 50); do
    done_all=yes
    for n in 1 2 3; do
      [ "$(cstatus "$n" | python3 -c 'import json,sys; r=json.load(sys.stdin)["node"]["last_realloc"]; print("yes" if r and r["duration_ms"] is not None else "no")')" = yes ] || done_all=no
    done
    [ "$done_all" = yes ] && break
    sleep 0.1
  done
  snapshot "$WORK/after-handover"
  HANDOVER_REPORT=$(python3 "$WORK/stats.py" handover "$WORK/before-handover" "$WORK/after-handover" \
    "$(( (t1 - t0) / 1000000 ))" "$((after_rx - before_rx))" "$((after_tx - before_tx))" "$HANDOVER_SECONDS")
  SINK[handover]=$(( (after_rx - before_rx) / HANDOVER_SECONDS ))
  GENR[handover]=$(( (after_tx - before_tx) / HANDOVER_SECONDS ))
  ORDER+=(handover)
  NODELINES[handover]="see below"
done

ratio() { python3 -c "print(f'{$1/$2:.3f}' if $2 else 'n/a')"; }
label() {
  case $1 in
    generator) echo "generator alone (no node)" ;;
    1) echo "1 node" ;;
    2 | 3) echo "$1 nodes" ;;
    handover) echo "2 -> 3 nodes (handover)" ;;
  esac
}
ONE=${SINK[1]:-0}
echo
printf '%-28s %12s %14s %10s\n' "row" "sink pps" "generator pps" "ratio"
for row in "${ORDER[@]}"; do
  r=n/a
  [ "$row" != generator ] && r=$(ratio "${SINK[$row]}" "$ONE")
  printf '%-28s %12d %14d %10s\n' "$(label "$row")" "${SINK[$row]}" "${GENR[$row]}" "$r"
done
echo "(sink pps: packets/s received at the sink's interface; ratio to the 1-node row)"
for row in "${ORDER[@]}"; do
  [ "$row" = handover ] && continue
  echo "$(label "$row"):"
  echo "${NODELINES[$row]}"
done
if [ -n "${HANDOVER_REPORT:-}" ]; then
  echo "handover:"
  echo "$HANDOVER_REPORT"
  if [ -n "${CAPTURE_REPORT:-}" ]; then echo "$CAPTURE_REPORT"; fi
fi
