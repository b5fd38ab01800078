#!/usr/bin/env bash
# scripts/ptx-generated-check.sh: the PTX files that a generator script unrolls must be exactly what
# their generator writes today (edit the generator, then regenerate; never edit such a .ptx by hand).
#
#   kernels/src/gemm/gen_gemm_bf16.py  -> kernels/src/gemm/gemm_bf16.ptx   (stdout)
#   kernels/src/gemm/gen_gemm_f32.py   -> kernels/src/gemm/gemm_f32.ptx    (stdout)
#   kernels/src/nf4/gen_ptx.py OUT     -> kernels/src/nf4/nf4.ptx
# Needs python3 only (standard library).
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/ptx-gen.XXXXXX")"
trap 'rm -rf -- "$TMP"' EXIT
fail=0
check() {
    local committed="$1" generated="$2"
    if cmp -s -- "$committed" "$generated"; then
        printf 'ptx-generated: %s matches its generator\n' "${committed#"$ROOT"/}"
    else
        printf 'ptx-generated: %s differs from what its generator writes; regenerate it\n' "${committed#"$ROOT"/}" >&2
        fail=1
    fi
}
(cd "$ROOT/kernels/src/gemm" && python3 gen_gemm_bf16.py >"$TMP/gemm_bf16.ptx" && python3 gen_gemm_f32.py >"$TMP/gemm_f32.ptx")
check "$ROOT/kernels/src/gemm/gemm_bf16.ptx" "$TMP/gemm_bf16.ptx"
check "$ROOT/kernels/src/gemm/gemm_f32.ptx" "$TMP/gemm_f32.ptx"
python3 "$ROOT/kernels/src/nf4/gen_ptx.py" "$TMP/nf4.ptx"
check "$ROOT/kernels/src/nf4/nf4.ptx" "$TMP/nf4.ptx"
mkdir -p "$TMP/moe_lora" && python3 "$ROOT/kernels/src/moe_lora/gen_ptx.py" "$TMP/moe_lora" >/dev/null
check "$ROOT/kernels/src/moe_lora/moe_lora.ptx" "$TMP/moe_lora/moe_lora.ptx"
check "$ROOT/kernels/src/moe_lora/moe_gate.ptx" "$TMP/moe_lora/moe_gate.ptx"
exit "$fail"
