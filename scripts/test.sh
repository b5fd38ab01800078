#!/usr/bin/env bash
# scripts/test.sh: THE test command of brainstacks (what README and CI run). No GPU needed.
#
#   1. cargo test --workspace --locked [ARGS...]   every test target of every crate
#   2. cargo check --workspace --features cuda      the CUDA build keeps compiling (no GPU needed;
#                                                  includes the gpu-bench binary's GPU side)
#   3. cargo bench --workspace --locked --no-run   bench code keeps compiling (nothing is timed)
#   4. scripts/ptx-check.sh                        every kernels/**/*.ptx assembles for sm_80 and
#                                                  sm_90 with zero spills (+ the checker's self-test)
#   5. scripts/ptx-generated-check.sh              unrolled PTX equals its generator's output
#   6. scripts/ptx-interp-check.sh quick           GEMM, NF4, MoE-LoRA, rsvd PTX in the Python
#                                                  interpreter (hazard checks on small shapes)
#   7. scripts/gpu-sim.sh --quick                  a subset of the GPU tests (kernels, tensor ops,
#                                                  the tape, a training step), REQUIRE_CUDA=1, on the
#                                                  ptxsim stand-in driver (no GPU needed)
#
# Extra arguments go to step 1 only, e.g.
#   scripts/test.sh -p brainstacks-tensor          (--workspace is dropped when -p/--package is given)
#   scripts/test.sh -- --nocapture                 (after --: arguments for the test binaries)
# Every step runs even when an earlier one fails; the exit status is non-zero if any step failed.
# Works from any directory; cargo honours CARGO_TARGET_DIR if it is set.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "$ROOT"

# -p/--package before any `--` selects packages: then --workspace would override it, so drop it.
scope=(--workspace)
for arg in "$@"; do
    case $arg in
    --) break ;;
    -p | -p* | --package | --package=*)
        scope=()
        break
        ;;
    esac
done

STEP_NAMES=()
STEP_RESULTS=()
STEP_TIMES=()
START_ALL=$SECONDS

banner() {
    printf '\n==============================================================================\n'
    printf '== test.sh step %s: %s\n' "$1" "$2"
    printf '==============================================================================\n'
}

# run_step TITLE CMD...: runs CMD, records PASS/FAIL and the duration; never aborts the script.
run_step() {
    local title=$1
    shift
    local n=$((${#STEP_NAMES[@]} + 1)) t0=$SECONDS rc=0
    banner "$n" "$title"
    printf '$ %s\n' "$*"
    "$@" || rc=$?
    STEP_NAMES+=("$title")
    STEP_TIMES+=("$((SECONDS - t0))s")
    if ((rc == 0)); then
        STEP_RESULTS+=("PASS")
    else
        STEP_RESULTS+=("FAIL (exit $rc)")
    fi
    printf '== step %s %s: %s (%ss)\n' "$n" "$title" "${STEP_RESULTS[-1]}" "$((SECONDS - t0))"
}

printf 'test.sh: repo %s; %s; CARGO_TARGET_DIR=%s\n' "$ROOT" "$(cargo --version 2>/dev/null || echo 'cargo: NOT FOUND')" \
    "${CARGO_TARGET_DIR:-<default: target/>}"

run_step "cargo test" cargo test "${scope[@]}" --locked "$@"
run_step "cargo check --features cuda" cargo check --workspace --locked --features cuda
run_step "cargo bench --no-run" cargo bench --workspace --locked --no-run
run_step "ptx check" "$ROOT/scripts/ptx-check.sh"
run_step "generated ptx in sync" "$ROOT/scripts/ptx-generated-check.sh"
run_step "ptx interpreter (quick)" "$ROOT/scripts/ptx-interp-check.sh" quick
run_step "GPU tests on ptxsim (quick)" "$ROOT/scripts/gpu-sim.sh" --quick

printf '\n==============================================================================\n'
printf '== test.sh summary\n'
failed=0
for i in "${!STEP_NAMES[@]}"; do
    printf '   %-22s %-16s %s\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}" "${STEP_TIMES[$i]}"
    if [[ ${STEP_RESULTS[$i]} != PASS ]]; then failed=$((failed + 1)); fi
done
# Disk use, so a run that fails with "No space left on device" shows how close the others come.
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
printf '   target dir %s: %s; disk free: %s\n' "$target_dir" "$(du -sh "$target_dir" 2>/dev/null | cut -f1)" \
    "$(df -h --output=avail "$ROOT" 2>/dev/null | tail -n1 | tr -d ' ')"
if ((failed == 0)); then
    printf 'test.sh: ALL PASSED (%s steps, %ss)\n' "${#STEP_NAMES[@]}" "$((SECONDS - START_ALL))"
    exit 0
fi
printf 'test.sh: FAILED (%s of %s steps failed, %ss)\n' "$failed" "${#STEP_NAMES[@]}" "$((SECONDS - START_ALL))"
exit 1
