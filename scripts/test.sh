#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what it needs (Debian 12, as root), checks
# formatting and lints, builds the release binaries once, and runs every test against them.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "setup"
./scripts/setup-debian.sh

step "format"
cargo fmt --all -- --check

step "protocol crates stay sans-IO (no tokio, no pnet)"
for leaf in netwire wccp gre steering nat vrrp hasync cluster; do
  if cargo tree -p "$leaf" -e normal --prefix none | grep -Eq '^(tokio|pnet|pnet_datalink) '; then
    echo "$leaf depends on an I/O crate:" >&2
    cargo tree -p "$leaf" -e normal >&2
    exit 1
  fi
done

step "build release binaries"
cargo build --release --workspace --bins

step "Debian package: build it from those binaries and check it (dpkg, systemd-analyze)"
./scripts/package.sh

step "clippy (all targets: benches and examples are type-checked here too)"
cargo clippy --release --workspace --all-targets -- -D warnings

step "tests (unit, crate, end-to-end on the release binaries)"
export SWROUTER_BIN_DIR="$PWD/target/release"
cargo test --release --workspace -- --test-threads=2

step "end-to-end tests again on the mmap (PACKET_MMAP) I/O backend"
# --workspace keeps the feature set of the first run, so nothing is rebuilt (with -p the
# integration crate's own feature set rebuilt part of the tree); `--test e2e` runs only the
# end-to-end binary. Skipped here: modules that test the control plane and management
# (command line, management socket, systemd, metrics scrape, the demo, WCCP protocol floods and
# multicast membership, the packet trace, the HA sync channel's own bookkeeping): what they
# send crosses the data plane like every other module's, whose backend-specific paths (rings,
# checksum completion, promiscuous receive) the remaining modules cover on mmap.
SWROUTER_TEST_IO_BACKEND=mmap cargo test --release --workspace --test e2e -- --test-threads=2 \
  --skip cli:: --skip management:: --skip sd_notify:: --skip metrics:: --skip demo:: \
  --skip wccp_barrage:: --skip wccp_multicast:: --skip trace:: \
  --skip ha_sync::the_standby_holds --skip ha_sync::ten_thousand

step "fuzz smoke: every cargo-fuzz target for a few seconds"
FUZZ_SECONDS=5 ./scripts/fuzz-smoke.sh

step "done: all tests passed in $(( $(date +%s) - start )) s"
