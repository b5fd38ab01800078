#!/usr/bin/env bash
# CPU generation, ours against transformers, in one run at the same thread count, on the same
# model and prompt.
#
#   scripts/bench-generate.sh
#
# Ours: the criterion suite `benches/benches/generate.rs` (ids `generate/prefill/...`,
# `generate/first-token/...` and `generate/decode/...`, for the f32 model, its NF4 form `...-nf4`
# and a bf16 one `...-bf16`), which also writes its random model as a Hugging Face checkpoint.
# transformers: `benches/anchors/cpu_generate.py` on that checkpoint, run only when BENCH_PYTHON
# names a python with torch and transformers; the NF4 rows need bitsandbytes in that python too
# (skipped with a note otherwise). Prints tokens/s for both and the ratio ours / theirs.
#
# Environment:
#   BENCH_THREADS   threads for both sides (default 2)
#   BENCH_PYTHON    python with torch + transformers (+ bitsandbytes for the NF4 rows; unset:
#                   the transformers side is skipped)
#   BENCH_REPS      timed runs of the transformers side (default 10; it reports the median)
#   CARGO_TARGET_DIR, as usual for cargo.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
threads="${BENCH_THREADS:-2}"
reps="${BENCH_REPS:-10}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== machine: $(nproc) cpus, load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo "== ours (BENCH_THREADS=$threads)"
GENERATE_BENCH_SAVE="$work/model" BENCH_THREADS="$threads" \
    cargo bench -p brainstacks-benches --bench generate --locked -- generate/ 2>&1 | tee "$work/ours.log"

# criterion prints the id on its own line, then `time: [low mid high]` with a unit; keep the middle.
awk '/^generate\// { id = $1 }
     /time:/ && id != "" {
        v = $4; u = $5;
        scale = (u == "s") ? 1e3 : (u == "ms") ? 1 : (u == "ns") ? 1e-6 : 1e-3;  # else µs
        print id, v * scale; id = "" }' "$work/ours.log" > "$work/ours.txt"
if [[ ! -s "$work/ours.txt" ]]; then
    echo "could not read our timings from criterion's output" >&2
    exit 1
fi

if [[ -z "${BENCH_PYTHON:-}" ]]; then
    echo "note: BENCH_PYTHON is not set, so the transformers side was skipped (set it to a python with torch and transformers)"
    exit 0
fi
echo "== transformers ($BENCH_PYTHON benches/anchors/cpu_generate.py --threads $threads --reps $reps)"
"$BENCH_PYTHON" benches/anchors/cpu_generate.py --model "$work/model" --threads "$threads" --reps "$reps" \
    2> >(grep -v -i "deprecat\|return forward_call" >&2) | tee "$work/theirs.jsonl"

echo "== tokens/s (ratio > 1: ours faster)"
python3 - "$work/ours.txt" "$work/theirs.jsonl" <<'PY'
import json, sys
ours = {}
for line in open(sys.argv[1]):
    i, ms = line.split()
    ours[i] = float(ms)
print(f"{'id':<44} {'ours ms':>9} {'theirs ms':>10} {'ours tok/s':>11} {'theirs tok/s':>13} {'ratio':>6}")
for line in open(sys.argv[2]):
    r = json.loads(line)
    i = r["id"]
    tokens = int(i.rsplit("/", 1)[1].lstrip("tcx")) if "/decode/" not in i else 1
    if i not in ours:
        print(f"{i:<44} (not in our run)")
        continue
    o, t = ours[i], r["median_ms"]
    print(f"{i:<44} {o:9.2f} {t:10.2f} {tokens / o * 1e3:11.1f} {tokens / t * 1e3:13.1f} {t / o:6.2f}")
PY
