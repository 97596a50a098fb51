#!/usr/bin/env bash
# The demo lab: installs what it needs (Debian 12, as root), builds swrouter, and runs
# `swrouter demo`: client — swrouter — server in network namespaces, with live counters.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-debian.sh
cargo build --release --bin swrouter
exec ./target/release/swrouter demo "$@"
