#!/usr/bin/env bash
# scripts/gpu-sim.sh: runs the GPU test binaries on this machine, without a GPU, through ptxsim
# (a PTX interpreter behind a stand-in libcuda, crate `ptxsim`).
#
#   scripts/gpu-sim.sh                      every GPU test target (REQUIRE_CUDA=1: none may skip)
#   scripts/gpu-sim.sh gpu_gemm gpu_nf4     only these test targets (any crate that has them)
#   scripts/gpu-sim.sh --quick              the subset the test command runs (about a minute and a
#                                           half of tests: GEMM, NF4, elementwise, AdamW, the
#                                           training ops, out-of-memory handling, MoE-LoRA through
#                                           the tape, and the train crate's GPU tests but the demo:
#                                           a 4-bit Llama's forward and generation, a stack step,
#                                           fused AdamW, batched linear gradients)
#   scripts/gpu-sim.sh gpu_training -- adamw   arguments after -- go to every test binary
#                                           (a name filter, --skip NAME, --nocapture)
#   PTXSIM_TRACE=1 scripts/gpu-sim.sh ...   one stderr line per kernel launch
#
# The train crate's micro demo (the_demo_pipeline_runs_on_the_gpu) pretrains and trains a
# width-256 model through the interpreter: hours here. It is skipped unless named after --
# (e.g. `scripts/gpu-sim.sh gpu_training -- the_demo_pipeline`).
#
# What passes here is the kernels' logic and their launch code: results against the CPU oracles,
# every global and shared access inside its buffer, every warp-collective reached by the whole
# warp. What it cannot show: speed, races between threads, and any behaviour of real hardware
# that differs from the PTX ISA as the interpreter reads it. A GPU run is still owed for those.
#
# The stand-in library is linked as libcuda.so only inside target/ptxsim/, which is put on
# LD_LIBRARY_PATH for the test processes and nothing else.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "$ROOT"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

cargo build --release --locked -p ptxsim
SIM_DIR="$TARGET/ptxsim"
mkdir -p "$SIM_DIR"
for name in libcuda.so libcuda.so.1; do
    ln -sfn "$TARGET/release/libptxsim.so" "$SIM_DIR/$name"
done

# Every GPU test target, as "package test" pairs.
ALL=(
    "brainstacks-kernels gpu_adamw"
    "brainstacks-kernels gpu_cross_entropy_topk"
    "brainstacks-kernels gpu_elementwise"
    "brainstacks-kernels gpu_gemm"
    "brainstacks-kernels gpu_moe_lora"
    "brainstacks-kernels gpu_nf4"
    "brainstacks-kernels gpu_philox_cast"
    "brainstacks-kernels gpu_reduce_softmax_norm"
    "brainstacks-kernels gpu_rope_embedding"
    "brainstacks-kernels gpu_rsvd"
    "brainstacks-tensor gpu_tensor"
    "brainstacks-tensor gpu_moe_lora"
    "brainstacks-tensor gpu_training_ops"
    "brainstacks-tensor gpu_faults"
    "brainstacks-autograd gpu_moe_lora"
    "brainstacks-train gpu_training"
)
# Arguments after -- go to the test binaries.
TEST_ARGS=()
NAMES=()
while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then
        shift
        TEST_ARGS=("$@")
        break
    fi
    NAMES+=("$1")
    shift
done
set -- ${NAMES[@]+"${NAMES[@]}"}

QUICK=(gpu_elementwise gpu_adamw gpu_gemm gpu_nf4 gpu_training_ops gpu_faults "brainstacks-autograd gpu_moe_lora" gpu_training)
if [ "${1:-}" = "--quick" ]; then
    set -- "${QUICK[@]}"
fi
SELECTED=()
for pair in "${ALL[@]}"; do
    if [ $# -eq 0 ]; then
        SELECTED+=("$pair")
        continue
    fi
    # A name matches a test target in any crate; "crate test" matches one crate's.
    for want in "$@"; do
        if [ "${pair#* }" = "$want" ] || [ "$pair" = "$want" ]; then SELECTED+=("$pair"); fi
    done
done
if [ ${#SELECTED[@]} -eq 0 ]; then
    echo "gpu-sim.sh: no GPU test target named $*" >&2
    exit 2
fi

RESULTS=()
FAILED=0
for pair in "${SELECTED[@]}"; do
    pkg=${pair% *}
    test=${pair#* }
    args=(${TEST_ARGS[@]+"${TEST_ARGS[@]}"})
    if [ "$test" = gpu_training ] && [ ${#args[@]} -eq 0 ]; then
        args=(--skip the_demo_pipeline_runs_on_the_gpu)
    fi
    printf '\n== %s %s (ptxsim) %s\n' "$pkg" "$test" "${args[*]+${args[*]}}"
    t0=$SECONDS
    if REQUIRE_CUDA=1 LD_LIBRARY_PATH="$SIM_DIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
        cargo test --locked --features cuda -p "$pkg" --test "$test" -- ${args[@]+"${args[@]}"}; then
        RESULTS+=("PASS  $((SECONDS - t0))s  $pkg $test")
    else
        RESULTS+=("FAIL  $((SECONDS - t0))s  $pkg $test")
        FAILED=1
    fi
done
printf '\n== ptxsim results\n'
printf '%s\n' "${RESULTS[@]}"
exit $FAILED
