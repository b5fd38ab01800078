#!/usr/bin/env bash
# One CPU Brainstacks training step, ours against PyTorch, in one run at the same thread count.
#
#   scripts/bench-train-step.sh
#
# Ours: the criterion suite `benches/benches/train_step.rs` (id
# `train_step/llama4x256_moe_e4r8_top2/b8x128`), preceded by its phase breakdown (forward,
# backward, optimizer). PyTorch: the anchor script `cpu_moe_lora_step.py` (the same model and
# step, every expert computed densely as in the paper's code), run only when `BENCH_PYTHON`
# names a python with torch. Prints both tokens/s and the ratio ours / PyTorch.
#
# Environment:
#   BENCH_THREADS   threads for both sides (default 2)
#   BENCH_BASE_MATMUL  our frozen base products: f32 (default) or bf16 (AMX tiles where the CPU
#                   has them); the anchor always computes in f32
#   BENCH_PYTHON    python with torch for the anchor (unset: the PyTorch side is skipped)
#   BENCH_ANCHOR    path of the anchor script (default ../shared/anchors/cpu_moe_lora_step.py,
#                   relative to the repository root; it is not part of this repository)
#   BENCH_STEPS     steps the anchor times (default 10; it reports the median)
#   CARGO_TARGET_DIR, as usual for cargo.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
threads="${BENCH_THREADS:-2}"
anchor="${BENCH_ANCHOR:-$root/../shared/anchors/cpu_moe_lora_step.py}"
steps="${BENCH_STEPS:-10}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "== machine: $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "== ours (BENCH_THREADS=$threads, BENCH_BASE_MATMUL=${BENCH_BASE_MATMUL:-f32})"
BENCH_THREADS="$threads" TRAIN_STEP_BREAKDOWN="${TRAIN_STEP_BREAKDOWN:-5}" \
    cargo bench -p brainstacks-benches --bench train_step --locked -- train_step/ 2>&1 | tee "$log"

# criterion prints `thrpt:  [low mid high]` with a unit (elem/s, Kelem/s, Melem/s); take the middle.
# With a saved baseline it also prints a `thrpt:` line of percentage changes: skip that one.
ours="$(awk '/thrpt:/ && /elem\/s/ {
    v = $4; u = $5;
    m = (u ~ /^Kelem/) ? 1e3 : (u ~ /^Melem/) ? 1e6 : 1;
    printf "%.0f\n", v * m }' "$log" | tail -n 1)"
if [[ -z "$ours" ]]; then
    echo "could not read our throughput from criterion's output" >&2
    exit 1
fi
echo "ours: ${ours} tokens/s"

if [[ -z "${BENCH_PYTHON:-}" ]]; then
    echo "note: BENCH_PYTHON is not set, so the PyTorch anchor was skipped (set it to a python with torch)"
    exit 0
fi
if [[ ! -f "$anchor" ]]; then
    echo "note: anchor script $anchor not found (set BENCH_ANCHOR); PyTorch side skipped"
    exit 0
fi
echo "== PyTorch ($BENCH_PYTHON $anchor --threads $threads --steps $steps)"
torch_line="$("$BENCH_PYTHON" "$anchor" --threads "$threads" --steps "$steps" | tail -n 1)"
echo "$torch_line"
theirs="$(sed -n 's/.*tokens\/s \([0-9.]*\).*/\1/p' <<<"$torch_line")"
if [[ -z "$theirs" ]]; then
    echo "could not read the anchor's tokens/s" >&2
    exit 1
fi
awk -v o="$ours" -v t="$theirs" -v n="$threads" 'BEGIN {
    printf "tokens/s at %d threads: ours %.0f, PyTorch %.0f, ratio ours/PyTorch %.2f\n", n, o, t, o / t }'
