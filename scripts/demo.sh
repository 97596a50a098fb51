#!/usr/bin/env bash
# The demo lab: installs what it needs (Debian 12, as root), builds swrouter and swcache, and runs
# `swrouter demo`: a client, a web server and two WCCP caches (swcache + Squid) around swrouter in
# network namespaces, with a live view of the router's status.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-debian.sh
# Both binaries: the demo runs swcache from the directory swrouter runs from.
cargo build --release --bins
exec "${CARGO_TARGET_DIR:-target}/release/swrouter" demo "$@"
