#!/usr/bin/env bash
# Installs what swrouter's demo and tests use on Debian 12 (idempotent; quiet when all is there).
# dpkg-dev, systemd and man-db are for scripts/package.sh: dpkg-shlibdeps works out the
# package's dependencies, systemd-analyze verifies the unit, man checks the man pages.
set -euo pipefail
pkgs=(iproute2 iputils-ping curl python3 tshark tcpdump squid nftables netsniff-ng iperf3 procps build-essential pkg-config traceroute prometheus dpkg-dev systemd man-db keepalived ethtool etcd-server etcd-client)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer no without a prompt.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts squid as a service on install; the tests run their own instances.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet squid 2>/dev/null; then
  systemctl stop squid || true
fi
# Nor keepalived: the HA interop tests run it as a peer in a namespace of their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet keepalived 2>/dev/null; then
  systemctl stop keepalived || true
fi
# Nor etcd (Debian enables it on install, on 127.0.0.1:2379 in the root namespace): the cluster
# tests start their own members in lab namespaces, with data dirs of their own. Only an etcd
# installed just now is also disabled; one that was there before is the host's business.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
  systemctl stop etcd || true
fi
if [[ " ${missing[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable etcd >/dev/null 2>&1 || true
fi
# Nor does Debian's prometheus need to run: the metrics test starts its own in a namespace.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
fi
