#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each (default 60) with libFuzzer.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`). On a stable toolchain the nightly-only
# flags cargo-fuzz uses are unlocked with RUSTC_BOOTSTRAP=1. New inputs the fuzzer finds go
# to fuzz/scratch/<target> (not committed); the committed seeds in fuzz/corpus/<target> are
# read but never written. A crash is saved under fuzz/artifacts/<target>/ and stops the
# run with a non-zero exit: copy it into fuzz/corpus/<target>/ so that the `fuzz_corpus`
# test replays it from then on.
set -euo pipefail

seconds="${1:-60}"
shift || true
cd "$(dirname "$0")/../fuzz"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(frame_decoder handshake query)
fi

export RUSTC_BOOTSTRAP=1
cargo fuzz build
for target in "${targets[@]}"; do
    mkdir -p "scratch/$target"
    echo "== $target: ${seconds}s"
    cargo fuzz run "$target" "scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=512 -timeout=10 \
        -print_final_stats=1
done
