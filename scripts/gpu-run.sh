#!/usr/bin/env bash
# scripts/gpu-run.sh: run the GPU test bundle on a GPU machine (no Rust, no network needed).
#
# Copied into the bundle as gpu-bundle/run.sh by scripts/gpu-bundle.sh; run it from anywhere:
#   gpu-bundle/run.sh                 # logs under ${OUT:-./gpu-out}
#   OUT=/some/dir gpu-bundle/run.sh
# What it does:
#   1. prints the device (nvidia-smi: name, driver version, CUDA version, compute capability, memory)
#      and the glibc of this machine (the binaries were built elsewhere; see bundle/MANIFEST);
#   2. runs every test executable in <bundle>/bin with REQUIRE_CUDA=1, so a missing or unusable GPU
#      is a failure and never a skip; each run's full output goes to $OUT/logs/<binary>.log;
#   3. prints a pass/fail table (also written to $OUT/summary.tsv) and exits non-zero if any failed.
# Extra arguments are passed to every test binary (e.g. a test-name filter, or --test-threads=1).
set -uo pipefail

HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
BIN_DIR="${GPU_BUNDLE_BIN:-$HERE/bin}"
OUT="${OUT:-./gpu-out}"
mkdir -p -- "$OUT/logs"
OUT="$(cd -- "$OUT" && pwd -P)"

say() { printf 'gpu-run: %s\n' "$*"; }

say "bundle: $HERE"
if [[ -f $HERE/MANIFEST ]]; then sed 's/^/  | /' -- "$HERE/MANIFEST"; fi

# ---- device ------------------------------------------------------------------------------------
{
    echo "== nvidia-smi"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=index,name,driver_version,compute_cap,memory.total --format=csv 2>&1 ||
            echo "(nvidia-smi --query-gpu failed)"
        # The "CUDA Version" (newest CUDA the driver supports) is only in the banner.
        nvidia-smi 2>&1 | grep -m1 -E 'CUDA Version' || echo "(no CUDA Version line)"
    else
        echo "nvidia-smi not found"
    fi
    echo "== glibc"
    ldd --version 2>&1 | head -1 || echo "(ldd not found)"
    echo "== libcuda"
    (ldconfig -p 2>/dev/null | grep -E 'libcuda\.so' | head -3) || true
} | tee "$OUT/device.txt"

# ---- tests -------------------------------------------------------------------------------------
shopt -s nullglob
BINS=("$BIN_DIR"/*)
if ((${#BINS[@]} == 0)); then
    say "error: no test executables in $BIN_DIR"
    exit 2
fi

printf 'binary\tstatus\texit\tpassed\tfailed\tskipped_lines\tseconds\n' >"$OUT/summary.tsv"
n_fail=0
for b in "${BINS[@]}"; do
    [[ -f $b && -x $b ]] || continue
    name="$(basename -- "$b")"
    log="$OUT/logs/$name.log"
    say "running $name"
    start=$SECONDS
    REQUIRE_CUDA=1 RUST_BACKTRACE=1 "$b" --show-output "$@" >"$log" 2>&1
    rc=$?
    secs=$((SECONDS - start))
    # Sum over every "test result: ok. N passed; M failed; ..." line of the log.
    read -r passed failed < <(awk '/^test result:/ { for (i = 2; i <= NF; i++) { if ($i == "passed;") p += $(i-1); if ($i == "failed;") f += $(i-1) } }
        END { printf "%d %d\n", p, f }' "$log")
    skipped="$(grep -c 'skipped:' -- "$log" || true)"
    status=PASS
    if ((rc != 0)); then
        status=FAIL
        n_fail=$((n_fail + 1))
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "${passed:-?}" "${failed:-?}" "$skipped" "$secs" >>"$OUT/summary.tsv"
    if ((rc != 0)); then
        say "$name FAILED (exit $rc); last lines of $log:"
        tail -n 30 -- "$log" | sed 's/^/    | /'
    fi
    # Device lines printed by the tests (e.g. "device: cuda:0 NVIDIA H100 ... (sm_90), driver CUDA 12.8").
    grep -E '^device: ' -- "$log" | head -1 | sed 's/^/  /' || true
done

echo
say "results (logs in $OUT/logs; skipped_lines counts 'skipped:' lines, GPU tests never skip here):"
column -t -s $'\t' "$OUT/summary.tsv" 2>/dev/null | sed 's/^/  /' || sed 's/^/  /' -- "$OUT/summary.tsv"
if ((n_fail > 0)); then
    say "FAILED: $n_fail of ${#BINS[@]} test executable(s)"
    exit 1
fi
say "ok: ${#BINS[@]} test executable(s) passed"
