#!/usr/bin/env bash
# Regenerates keepalived-*.pcap: keepalived (Debian package) as VRRPv3 master for VRID 51 in a
# namespace of its own on a veth pair, captured from the peer namespace. Run as root; it makes
# and removes namespaces vrrpcap-a/vrrpcap-b and touches nothing else.
set -euo pipefail
out="$(cd "$(dirname "$0")" && pwd)"
tmp=$(mktemp -d)
a=vrrpcap-a b=vrrpcap-b
cleanup() {
  [ -f "$tmp/ka.pid" ] && kill "$(cat "$tmp/ka.pid")" 2>/dev/null || true
  ip netns del $a 2>/dev/null || true
  ip netns del $b 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
ip netns add $a
ip netns add $b
ip link add vr-a netns $a type veth peer name vr-b netns $b
ip -n $a link set vr-a address 02:00:00:00:aa:01
ip -n $b link set vr-b address 02:00:00:00:bb:01
ip -n $a addr add 192.0.2.1/24 dev vr-a
ip -n $b addr add 192.0.2.2/24 dev vr-b
ip -n $a link set lo up; ip -n $a link set vr-a up
ip -n $b link set lo up; ip -n $b link set vr-b up

capture() { # name, extra global_defs lines, advert_int, priority
  local name=$1 globals=$2 advert=$3 prio=$4
  cat >"$tmp/ka.conf" <<CONF
global_defs {
  vrrp_version 3
  router_id swrouter-test
  script_user root
  enable_script_security
  vrrp_garp_master_repeat 1
  vrrp_garp_master_refresh 0
  $globals
}
vrrp_instance VI_1 {
  state BACKUP
  interface vr-a
  virtual_router_id 51
  priority $prio
  advert_int $advert
  virtual_ipaddress {
    192.0.2.100/24
    192.0.2.101/24
  }
}
CONF
  ip netns exec $b tcpdump -i vr-b -U -w "$tmp/cap.pcap" 'ip proto 112 or arp' 2>/dev/null &
  local dump=$!
  sleep 1
  ip netns exec $a keepalived -n -l -D -f "$tmp/ka.conf" --vrrp -p "$tmp/ka.main.pid" -r "$tmp/ka.pid" \
    >"$tmp/ka.log" 2>&1 &
  local ka=$!
  sleep 5
  kill -TERM $ka; wait $ka 2>/dev/null || true
  sleep 1
  kill -INT $dump; wait $dump 2>/dev/null || true
  cp "$tmp/cap.pcap" "$out/keepalived-$name.pcap"
}
capture default "" 1 100
capture fast "" 0.1 200
# Keep it small: start-up (advert, two gratuitous ARPs), a few 10 ms adverts, the priority-0 one.
last=$(tcpdump -r "$out/keepalived-fast.pcap" 2>/dev/null | wc -l)
editcap -F pcap -r "$out/keepalived-fast.pcap" "$tmp/fast.pcap" 1-6 "$last"
cp "$tmp/fast.pcap" "$out/keepalived-fast.pcap"
keepalived --version 2>&1 | head -1
