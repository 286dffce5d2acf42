#!/usr/bin/env bash
# Builds and runs one fuzz target with the stable toolchain (no cargo-fuzz, no nightly).
#
#   fuzz/run.sh TARGET SECONDS [JOBS]
#
# The sanitizer-coverage instrumentation that cargo-fuzz asks of a nightly rustc is
# available on stable as LLVM passes and flags; `--cfg fuzzing` lets the code under test
# skip checksums that would keep the fuzzer from the parsers behind them. The build has its
# own target dir (fuzz/target) so it never invalidates the normal one. The committed corpus
# fuzz/corpus/TARGET is copied into fuzz/corpus-run/TARGET (both target dir and run dir
# are git-ignored); new inputs land there and crashes in fuzz/corpus-run/TARGET-crashes/.
# Environment: FUZZ_TIMEOUT (seconds per input, default 10), FUZZ_RSS_MB (default 4096),
# FUZZ_BUILD_ONLY=1 (build and stop), FUZZ_ARGS (more libFuzzer flags).
set -euo pipefail

if [ $# -lt 2 ]; then
    echo "usage: fuzz/run.sh TARGET SECONDS [JOBS]" >&2
    exit 2
fi
target=$1
seconds=$2
jobs=${3:-1}
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

if [ ! -f "fuzz_targets/$target.rs" ]; then
    echo "no fuzz target '$target' (fuzz/fuzz_targets/*.rs: $(ls fuzz_targets | sed 's/\.rs$//' | tr '\n' ' '))" >&2
    exit 2
fi

host=$(rustc -vV | sed -n 's/^host: //p')
# Passing --target keeps RUSTFLAGS off build scripts and proc macros (as cargo-fuzz does).
RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing" \
CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true \
CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true \
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    cargo build --release --locked --target "$host" --target-dir "$here/target" --bin "$target"
binary="$here/target/$host/release/$target"
if [ "${FUZZ_BUILD_ONLY:-0}" = 1 ]; then
    echo "built $binary"
    exit 0
fi

run="$here/corpus-run/$target"
crashes="$here/corpus-run/$target-crashes"
mkdir -p "$run" "$crashes"
if [ -d "corpus/$target" ]; then
    cp -n corpus/"$target"/* "$run"/ 2>/dev/null || true
fi
log="$here/corpus-run/$target.log"
rm -f "$here"/fuzz-*.log
# One job runs in this process; more run as libFuzzer's forked jobs, one log each.
parallel=()
if [ "$jobs" -gt 1 ]; then
    parallel=(-jobs="$jobs" -workers="$jobs")
fi

set +e
# shellcheck disable=SC2086
"$binary" "$run" \
    -max_total_time="$seconds" \
    -timeout="${FUZZ_TIMEOUT:-10}" \
    -rss_limit_mb="${FUZZ_RSS_MB:-4096}" \
    -malloc_limit_mb="${FUZZ_RSS_MB:-4096}" \
    -artifact_prefix="$crashes/" \
    -print_final_stats=1 \
    "${parallel[@]}" \
    ${FUZZ_ARGS:-} 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# With -jobs > 1 libFuzzer writes one fuzz-N.log per job.
if [ "$jobs" -gt 1 ]; then
    cat "$here"/fuzz-*.log >> "$log" 2>/dev/null || true
    rm -f "$here"/fuzz-*.log
fi

execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | awk '{s += $1} END {print s + 0}')
found=$(find "$crashes" -type f | wc -l)
echo "target $target: ${seconds}s, $execs executions, $found crash/timeout/oom inputs in $crashes, exit $status"
exit "$status"
