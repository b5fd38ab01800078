#!/usr/bin/env bash
# scripts/ptx-interp-check.sh: run the hand-written GEMM, NF4, MoE-LoRA and rsvd PTX through the
# per-thread PTX interpreter in scripts/ptx_interp/ (barriers, cp.async waits, divergence and
# fragment layouts on the very text the GPU loads; see interp.py), after its self-test (planted
# bugs must be caught).
# Needs python3 only; about a minute on two cores. `quick` runs fewer, smaller shapes.
set -euo pipefail
ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
DIR="$ROOT/scripts/ptx_interp"
python3 "$DIR/selftest.py"
python3 "$DIR/check_nf4.py" ${1:+"$1"}
python3 "$DIR/check_gemm.py" ${1:+"$1"}
python3 "$DIR/check_moe_lora.py" ${1:+"$1"}
python3 "$DIR/check_rsvd.py" ${1:+"$1"}
