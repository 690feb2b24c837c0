#!/usr/bin/env bash
# Runs every cargo-fuzz target for a fixed time (issue 7). Outside CI.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     default 60 s, all targets
#
# cargo-fuzz normally wants nightly Rust; this machine has stable only, so the script sets
# RUSTC_BOOTSTRAP=1, which lets stable rustc accept the -Z flags cargo-fuzz passes (the
# AddressSanitizer runtime ships with the stable toolchain). Installs cargo-fuzz if missing.
# Corpora live in fuzz/corpus/<target> (seeded from fuzz/seeds/<target>); crashes land in
# fuzz/artifacts/<target>/ and make the script exit non-zero: turn each one into a regression
# case in tests/hardening.rs (`fuzz_regressions`).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
SECS=${1:-60}
shift || true
TARGETS=("$@")
((${#TARGETS[@]})) || TARGETS=(request_head chunked_body watch_stream flags jwt protobuf token_request issuer_keys in_cluster gzip)

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HERE/target}
cd "$HERE"

failed=()
for target in "${TARGETS[@]}"; do
    corpus=$HERE/corpus/$target
    mkdir -p "$corpus" "$HERE/artifacts/$target"
    if [[ -d $HERE/seeds/$target ]]; then
        cp -n "$HERE/seeds/$target"/* "$corpus"/ 2>/dev/null || true
    fi
    dict=()
    [[ -f $HERE/dict/$target.dict ]] && dict=("-dict=$HERE/dict/$target.dict")
    echo "=== $target: ${SECS}s" >&2
    log=$HERE/artifacts/$target/last-run.log
    if cargo fuzz run --release "$target" "$corpus" -- \
        -max_total_time="$SECS" -max_len=70000 -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        "${dict[@]}" 2>&1 | tee "$log" | grep -E '^(#[0-9]+.*(DONE|pulse)|stat::number_of_executed_units|==[0-9]+==ERROR|SUMMARY)' >&2; then
        :
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if grep -qE '==[0-9]+==ERROR|panicked at|deadly signal|Test unit written' "$log"; then
        failed+=("$target")
    elif [[ -z $runs ]]; then
        failed+=("$target(did not run: see $log)")
    fi
    echo "=== $target: ${runs:-?} inputs, corpus $(ls "$corpus" | wc -l) files" >&2
done

if ((${#failed[@]})); then
    echo "FAILED: ${failed[*]} (crash inputs in fuzz/artifacts/<target>/)" >&2
    exit 1
fi
echo "no crashes" >&2
