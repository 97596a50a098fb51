#!/usr/bin/env bash
# Fuzz smoke test: runs every cargo-fuzz target listed in fuzz/Cargo.toml for a few seconds
# (FUZZ_SECONDS, default 5), on stable Rust through RUSTC_BOOTSTRAP=1 (cargo-fuzz needs
# nightly-only flags: -Zsanitizer=address and the sancov passes).
#
# New inputs go to a scratch corpus, so the committed seeds in fuzz/corpus/<target>/ are only
# read; a crash leaves its input in fuzz/artifacts/<target>/ and fails the script.
#
# When cargo-fuzz cannot be installed or cannot build here the step fails: a fuzz step that
# did not fuzz must not pass (issue 13). The seed corpora are still replayed through the same
# entry points as ordinary tests (`wccp/tests/wccp/fuzz_corpus.rs`, `gre`'s corpus test, and the
# `conf_parse`, `steering_compile`, `router_pipeline`, `vrrp_*`, `hasync_handle` and `nat_esp`
# replays in conf, steering, router, vrrp, hasync and nat) first, so a crash among them is reported too.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-5}"

fallback() {
  echo "fuzz-smoke: $1; replaying the seed corpora as tests, then failing: nothing was fuzzed" >&2
  cargo test -p wccp --test wccp fuzz_corpus:: || true
  cargo test -p gre fuzz || true
  cargo test -p conf --test conf fuzz_corpus:: || true
  cargo test -p steering --test chains replay_steering_compile_corpus || true
  cargo test -p router --test pipeline replay_router_pipeline_corpus || true
  cargo test -p vrrp --test vrrp fuzz_corpus:: || true
  cargo test -p hasync --test hasync replay_hasync_handle_corpus || true
  cargo test -p nat --features fuzzing --lib fuzzing || true
  exit 1
}

if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked || fallback "cargo-fuzz could not be installed"
fi

targets=$(cargo fuzz list)
[ -n "$targets" ] || fallback "no fuzz targets found"

export RUSTC_BOOTSTRAP=1
cargo fuzz build || fallback "cargo fuzz build failed"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $targets; do
  echo "== $target (${seconds}s)"
  mkdir -p "$scratch/$target"
  seeds=()
  [ -d "fuzz/corpus/$target" ] && seeds=("fuzz/corpus/$target")
  status=0
  cargo fuzz run "$target" "$scratch/$target" "${seeds[@]}" -- \
    -max_total_time="$seconds" -print_final_stats=1 >"$scratch/$target.log" 2>&1 || status=$?
  grep -E '^(INFO: seed corpus|Done [0-9]+ runs|stat::(number_of_executed_units|peak_rss_mb))' \
    "$scratch/$target.log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$scratch/$target.log" >&2
    echo "fuzz-smoke: $target failed (exit $status); the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
echo "fuzz-smoke: all targets ran"
