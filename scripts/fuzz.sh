#!/usr/bin/env bash
# scripts/fuzz.sh: a fuzz campaign over every target in fuzz/, one after the other, on one core.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 600 s, every target)
#
# Needs cargo-fuzz (`cargo install cargo-fuzz`); runs on stable Rust without sanitizers (`-s none`).
# Each target starts from its committed seeds (fuzz/corpus/<target>) but grows a scratch corpus
# under $FUZZ_WORK (default /tmp/brainstacks-fuzz), so the committed seeds stay small. A crash,
# hang (libFuzzer -timeout, 10 s per input) or out-of-memory (-rss_limit_mb, 2048 MiB) is saved
# under fuzz/artifacts/<target>/, which the normal test command then replays.
#
# Last, a table: target, seconds, executions, executions/s, final corpus size, verdict; and
# $FUZZ_WORK/summary.json with the same rows. The exit status is non-zero if any target failed.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "$ROOT/fuzz"

SECONDS_PER_TARGET=${1:-600}
shift || true
if [[ $# -gt 0 ]]; then
    TARGETS=("$@")
else
    mapfile -t TARGETS < <(cargo fuzz list)
fi
WORK=${FUZZ_WORK:-/tmp/brainstacks-fuzz}
mkdir -p "$WORK"

echo "fuzz: building ${#TARGETS[@]} targets (release, no sanitizer)"
cargo fuzz build -s none -O

rows=()
failed=0
for target in "${TARGETS[@]}"; do
    corpus="$WORK/corpus/$target"
    log="$WORK/$target.log"
    mkdir -p "$corpus"
    echo "fuzz: $target for ${SECONDS_PER_TARGET} s (log: $log)"
    start=$SECONDS
    status=0
    cargo fuzz run -s none -O "$target" "$corpus" "corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1 || status=$?
    # libFuzzer's own count of fuzzing seconds (the wall time also holds startup).
    elapsed=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | grep -o '[0-9]*' | tail -n1 || true)
    elapsed=${elapsed:-$((SECONDS - start))}
    # A crashed run prints no final stats: the greps then find nothing, which is not an error.
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1 || true)
    per_s=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1 || true)
    corpus_size=$(find "$corpus" -type f | wc -l)
    if [[ $status -eq 0 ]]; then
        verdict=ok
    else
        verdict="FAILED (exit $status; see $log and fuzz/artifacts/$target)"
        failed=1
    fi
    rows+=("$target|$elapsed|${execs:-?}|${per_s:-?}|$corpus_size|$verdict")
done

{
    echo "["
    sep=""
    for row in "${rows[@]}"; do
        IFS='|' read -r t s e p c v <<<"$row"
        printf '%s  {"target": "%s", "seconds": %s, "executions": "%s", "exec_per_s": "%s", "corpus": %s, "verdict": "%s"}' \
            "$sep" "$t" "$s" "$e" "$p" "$c" "$v"
        sep=$',\n'
    done
    printf '\n]\n'
} >"$WORK/summary.json"

printf '\n%-20s %8s %14s %10s %8s  %s\n' target seconds executions exec/s corpus verdict
for row in "${rows[@]}"; do
    IFS='|' read -r t s e p c v <<<"$row"
    printf '%-20s %8s %14s %10s %8s  %s\n' "$t" "$s" "$e" "$p" "$c" "$v"
done
exit $failed
