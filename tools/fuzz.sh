#!/usr/bin/env bash
# Build and run the fuzz targets in fuzz/ on STABLE Rust: libFuzzer (linked by libfuzzer-sys,
# compiled with the system C++ compiler) plus LLVM SanitizerCoverage enabled with the stable
# `-Cpasses=sancov-module` flags, the same instrumentation `cargo fuzz build -s none` uses. No
# nightly, no cargo-fuzz install, no AddressSanitizer (the code under test is safe Rust; debug
# assertions and overflow checks are on).
#
#   tools/fuzz.sh build                       build all targets
#   tools/fuzz.sh run TARGET RUNS [SECONDS]   fuzz TARGET for RUNS executions (or SECONDS)
#   tools/fuzz.sh smoke SECONDS               every target for SECONDS each (CI)
#
# Seeds are committed in fuzz/seeds/TARGET; the working corpus is fuzz/corpus/TARGET
# (git-ignored); crashes land in fuzz/artifacts/TARGET.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
TARGETS=(manifest chain_state outbox_log)
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Ccodegen-units=16"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros (as cargo-fuzz does).
HOST=$(rustc -vV | sed -n 's/^host: //p')
build() { cargo build --release --bins --target "$HOST"; }
run() {
    local t=$1 runs=$2 secs=${3:-0}
    mkdir -p "corpus/$t" "artifacts/$t"
    local bin=target/$HOST/release/$t
    [ -x "$bin" ] || build
    local args=(-runs="$runs" -print_final_stats=1 -artifact_prefix="artifacts/$t/" -max_len=65536)
    [ "$secs" != 0 ] && args+=(-max_total_time="$secs")
    "$bin" "${args[@]}" "corpus/$t" "seeds/$t"
}
case "${1:-}" in
    build) build ;;
    run) run "$2" "$3" "${4:-0}" ;;
    smoke)
        build
        for t in "${TARGETS[@]}"; do run "$t" -1 "$2"; done ;;
    *) echo "usage: $0 build | run TARGET RUNS [SECONDS] | smoke SECONDS" >&2; exit 2 ;;
esac
