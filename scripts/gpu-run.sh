#!/usr/bin/env bash
# scripts/gpu-run.sh: run the GPU bundle on a GPU machine (no Rust, no network needed).
#
# Copied into the bundle as gpu-bundle/run.sh by scripts/gpu-bundle.sh; run it from anywhere:
#   gpu-bundle/run.sh                 # logs under ${OUT:-./gpu-out}
#   OUT=/some/dir gpu-bundle/run.sh
# What it does:
#   1. prints the device (nvidia-smi: name, driver version, CUDA version, compute capability, memory;
#      then our own device_info test's line) and the glibc of this machine (the binaries were built
#      elsewhere; see bundle/MANIFEST);
#   2. unpacks the xz-compressed executables (bin/*.xz, gpu-bench.xz, brainstacks.xz) into a scratch
#      folder (with xz, or python3's lzma), then runs every test executable with REQUIRE_CUDA=1, so a
#      missing or unusable GPU is a failure and never a skip; each run's full output goes to
#      $OUT/logs/<binary>.log; a pass/fail table goes to $OUT/summary.tsv;
#   2b. if the bundle has the brainstacks CLI: `brainstacks demo --quick --device cuda`, then the
#      same on the CPU for comparison (logs, report.md and report.json under $OUT/demo-cuda and
#      $OUT/demo-cpu); a failed GPU demo fails the run;
#   3. if <bundle>/gpu-bench exists: finds libcublas (system CUDA, or the pip packages nvidia-cublas /
#      PyTorch ship) for the cuBLAS yardstick, runs `gpu-bench run`, results in $OUT/bench.jsonl
#      (an unfound libcublas only makes the cuBLAS rows "unavailable") and the issue targets judged on
#      that run in $OUT/targets.jsonl;
#   4. if <bundle>/anchors/gpu_kernel_anchors.py exists and python3 can import torch: runs it
#      (writes $OUT/kernel_anchors.json), after installing <bundle>/wheels/*.whl, if any, into a
#      scratch folder on PYTHONPATH;
#   5. prints the summary: the device, the test table, the benchmark JSON lines and table, the
#      anchors' status, the overall status; and last the targets table (`gpu-bench targets`:
#      PASS/FAIL per issue target, and every kernel's ratio to cuBLAS at its shape, all from this
#      run's bench.jsonl).
# Exit status: non-zero if any test executable or benchmark failed (the anchors and the targets'
# verdicts never fail it: the targets are goals, not correctness).
#
# Environment: GPU_RUN_TESTS=0 skips the test executables, GPU_RUN_BENCH=0 the benchmarks,
# GPU_RUN_ANCHORS=0 the anchors, GPU_RUN_DEMO=0 the demo runs (GPU_RUN_DEMO_TIMEOUT, seconds per
# run, default 300);
# GPU_BENCH_ARGS="--filter cast --reps 20" goes to `gpu-bench run`; GPU_RUN_ANCHORS_TIMEOUT (seconds,
# default 600); GPU_RUN_PACK_LOGS=1 packs $OUT/logs into $OUT/logs.tar.gz and removes the folder
# (for hosts that return only a few files from $OUT).
# Extra arguments are passed to every test binary (e.g. a test-name filter, or --test-threads=1).
set -uo pipefail

HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
BIN_DIR="${GPU_BUNDLE_BIN:-$HERE/bin}"
OUT="${OUT:-./gpu-out}"
mkdir -p -- "$OUT/logs"
OUT="$(cd -- "$OUT" && pwd -P)"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/gpu-run.XXXXXX")"
trap 'rm -rf -- "$SCRATCH"' EXIT

say() { printf 'gpu-run: %s\n' "$*"; }

say "bundle: $HERE"
if [[ -f $HERE/MANIFEST ]]; then sed 's/^/  | /' -- "$HERE/MANIFEST"; fi

# ---- device ------------------------------------------------------------------------------------
{
    echo "== nvidia-smi"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=index,name,driver_version,compute_cap,memory.total,clocks.max.sm --format=csv 2>&1 ||
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

# The binaries are built for x86-64-v3 (.cargo/config.toml): without AVX2 and FMA every one of
# them would die of SIGILL, so say that once instead.
if [[ $(uname -m) == x86_64 && -r /proc/cpuinfo ]] && { ! grep -qw avx2 /proc/cpuinfo || ! grep -qw fma /proc/cpuinfo; }; then
    say "error: this CPU lacks AVX2 or FMA, which the bundle's x86-64-v3 binaries need;"
    say "       rebuild the bundle with RUSTFLAGS=\"-C target-cpu=x86-64\" scripts/gpu-bundle.sh"
    exit 2
fi

# ---- unpack ------------------------------------------------------------------------------------
# unxz SRC DEST: decompresses one executable (xz when installed, else python3's lzma module).
unxz_to() {
    if command -v xz >/dev/null 2>&1; then
        xz -dc -- "$1" >"$2"
    else
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$1" "$2"
    fi && chmod +x -- "$2"
}
mkdir -p -- "$SCRATCH/bin"
shopt -s nullglob
for f in "$BIN_DIR"/*; do
    case $f in
    *.xz) unxz_to "$f" "$SCRATCH/bin/$(basename -- "${f%.xz}")" || { say "error: cannot unpack $f"; exit 2; } ;;
    *) cp -- "$f" "$SCRATCH/bin/" ;;
    esac
done
BINS=("$SCRATCH/bin"/*)
shopt -u nullglob
# unpacked TOOL: the path of gpu-bench or brainstacks (compressed or not), or nothing.
unpacked() {
    if [[ -f $HERE/$1.xz ]]; then
        unxz_to "$HERE/$1.xz" "$SCRATCH/$1" && echo "$SCRATCH/$1"
    elif [[ -x $HERE/$1 ]]; then
        echo "$HERE/$1"
    fi
}
BENCH="$(unpacked gpu-bench)"
CLI="$(unpacked brainstacks)"
if ((${#BINS[@]} == 0)); then
    say "error: no test executables in $BIN_DIR"
    exit 2
fi

# Our own view of the device: the device_info test prints "device: cuda:0 <name> (sm_XY), driver
# CUDA X.Y". Found by listing each binary's tests.
for b in "${BINS[@]}"; do
    if "$b" --list 2>/dev/null | grep -q '^device_info_is_readable: test'; then
        echo "== device_info test ($(basename -- "$b"))" | tee -a "$OUT/device.txt"
        REQUIRE_CUDA=1 "$b" device_info_is_readable --exact --nocapture 2>&1 |
            grep -E '^device: |panicked|REQUIRE_CUDA' | tee -a "$OUT/device.txt"
        break
    fi
done

# ---- tests -------------------------------------------------------------------------------------
printf 'binary\tstatus\texit\tpassed\tfailed\tskipped_lines\tseconds\n' >"$OUT/summary.tsv"
n_fail=0
n_bins=0
# GPU_RUN_TESTS=0 (e.g. a second call that only benchmarks) runs none of them.
if [[ ${GPU_RUN_TESTS:-1} == 0 ]]; then BINS=(); fi
for b in "${BINS[@]}"; do
    [[ -f $b && -x $b ]] || continue
    n_bins=$((n_bins + 1))
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
done

# ---- the demo on the GPU, then on the CPU ---------------------------------------------------------
demo_status=skipped
demo_failed=0
if [[ ${GPU_RUN_DEMO:-1} != 0 && -n $CLI ]]; then
    tmo=()
    if command -v timeout >/dev/null 2>&1; then tmo=(timeout "${GPU_RUN_DEMO_TIMEOUT:-300}"); fi
    demo_status=""
    for dev in cuda cpu; do
        say "running brainstacks demo --quick --device $dev"
        mkdir -p -- "$OUT/demo-$dev"
        start=$SECONDS
        "${tmo[@]}" "$CLI" demo --quick --device "$dev" --out "$SCRATCH/demo-$dev" >"$OUT/demo-$dev/demo.log" 2>&1
        rc=$?
        for f in report.md report.json; do
            if [[ -f $SCRATCH/demo-$dev/$f ]]; then cp -- "$SCRATCH/demo-$dev/$f" "$OUT/demo-$dev/"; fi
        done
        demo_status="$demo_status $dev: exit $rc in $((SECONDS - start)) s;"
        if ((rc != 0)); then
            say "demo on $dev FAILED (exit $rc); last lines of $OUT/demo-$dev/demo.log:"
            tail -n 30 -- "$OUT/demo-$dev/demo.log" | sed 's/^/    | /'
            if [[ $dev == cuda ]]; then demo_failed=1; fi
        fi
    done
elif [[ ${GPU_RUN_DEMO:-1} != 0 ]]; then
    demo_status="skipped (no brainstacks CLI in the bundle)"
fi

# ---- benchmarks --------------------------------------------------------------------------------
# cudarc opens libcublas by fixed names (libcublas.so, libcublas.so.12, .so.11, ...). Look for the
# library where a CUDA machine keeps it, and give gpu-bench a folder with a link named libcublas.so
# to it (a pip wheel of CUDA 13 ships only libcublas.so.13), plus the library's own folder (for
# libcublasLt next to it) on LD_LIBRARY_PATH.
find_cublas() {
    local c
    for c in $(ldconfig -p 2>/dev/null | awk '/libcublas\.so/ && !/Lt/ { print $NF }') \
        /usr/local/cuda/lib64/libcublas.so* /usr/local/cuda/targets/*/lib/libcublas.so* \
        /usr/local/cuda-*/lib64/libcublas.so* /usr/local/cuda-*/targets/*/lib/libcublas.so*; do
        if [[ -f $c ]]; then
            echo "$c"
            return 0
        fi
    done
    command -v python3 >/dev/null 2>&1 || return 1
    # The nvidia-cublas wheel (nvidia/cublas/lib or nvidia/cu13/lib) and PyTorch's lib folder,
    # found without importing torch (slow).
    python3 - <<'PY' 2>/dev/null
import glob, importlib.util, os
roots = []
for mod in ("nvidia", "torch"):
    try:
        spec = importlib.util.find_spec(mod)
    except Exception:
        spec = None
    if spec and spec.submodule_search_locations:
        roots += list(spec.submodule_search_locations)
found = []
for r in roots:
    found += glob.glob(os.path.join(r, "**", "libcublas.so*"), recursive=True)
found = sorted(p for p in set(found) if os.path.isfile(p))
if found:
    print(found[-1])
PY
}

bench_rc=skipped
if [[ ${GPU_RUN_BENCH:-1} != 0 && -n $BENCH ]]; then
    bench_env=()
    cublas="$(find_cublas | head -1)"
    if [[ -n $cublas ]]; then
        mkdir -p -- "$SCRATCH/cublas"
        ln -sf -- "$cublas" "$SCRATCH/cublas/libcublas.so"
        bench_env=(env "LD_LIBRARY_PATH=$SCRATCH/cublas:$(dirname -- "$cublas")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
        say "libcublas for the cuBLAS yardstick: $cublas"
    else
        say "libcublas not found: the cuBLAS yardstick will be reported unavailable"
    fi
    commit="$(sed -n 's/^commit: *\([0-9a-f]\{7,\}\).*/\1/p' -- "$HERE/MANIFEST" 2>/dev/null | head -1)"
    if [[ -n $commit ]] && grep -q '^commit:.*uncommitted' -- "$HERE/MANIFEST"; then commit="$commit-dirty"; fi
    read -r -a extra <<<"${GPU_BENCH_ARGS:-}"
    say "running gpu-bench run ${extra[*]}"
    "${bench_env[@]}" "$BENCH" run --out "$OUT/bench.jsonl" --targets "$OUT/targets.jsonl" \
        ${commit:+--commit "$commit"} "${extra[@]}" \
        >"$OUT/logs/gpu-bench.log" 2>&1
    bench_rc=$?
    if ((bench_rc != 0)); then
        say "gpu-bench exited $bench_rc; last lines of $OUT/logs/gpu-bench.log:"
        tail -n 30 -- "$OUT/logs/gpu-bench.log" | sed 's/^/    | /'
    fi
elif [[ ${GPU_RUN_BENCH:-1} != 0 ]]; then
    say "no gpu-bench in the bundle: benchmarks skipped"
fi

# ---- anchors -----------------------------------------------------------------------------------
anchors_status=skipped
ANCHORS="$HERE/anchors/gpu_kernel_anchors.py"
if [[ ${GPU_RUN_ANCHORS:-1} != 0 && -f $ANCHORS ]]; then
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import torch' >/dev/null 2>&1; then
        anchors_status="skipped (python3 with torch not found)"
    else
        pyenv=()
        if compgen -G "$HERE/wheels/*.whl" >/dev/null; then
            if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SCRATCH/site" \
                "$HERE"/wheels/*.whl >"$OUT/logs/anchors-pip.log" 2>&1; then
                pyenv=(env "PYTHONPATH=$SCRATCH/site${PYTHONPATH:+:$PYTHONPATH}")
            else
                say "installing the bundled wheels failed (see $OUT/logs/anchors-pip.log); running without them"
            fi
        fi
        say "running anchors/gpu_kernel_anchors.py"
        tmo=()
        if command -v timeout >/dev/null 2>&1; then tmo=(timeout "${GPU_RUN_ANCHORS_TIMEOUT:-600}"); fi
        OUT="$OUT" PYTHONUNBUFFERED=1 "${pyenv[@]}" "${tmo[@]}" python3 "$ANCHORS" >"$OUT/logs/anchors.log" 2>&1
        arc=$?
        anchors_status="exit $arc"
        if [[ -f $OUT/kernel_anchors.json ]]; then
            anchors_status="$anchors_status, wrote kernel_anchors.json"
            errs="$(grep -c '"error"' -- "$OUT/kernel_anchors.json" || true)"
            if ((errs > 0)); then anchors_status="$anchors_status ($errs section(s) with an error, see the log)"; fi
        fi
    fi
elif [[ ${GPU_RUN_ANCHORS:-1} != 0 ]]; then
    anchors_status="skipped (no anchors script in the bundle)"
fi

# ---- summary (last) ----------------------------------------------------------------------------
echo
say "device:"
grep -E '^(index|[0-9]+,)|CUDA Version|^device: ' -- "$OUT/device.txt" | sed 's/^/  /'
say "tests (logs in $OUT/logs; skipped_lines counts 'skipped:' lines, GPU tests never skip here):"
column -t -s $'\t' "$OUT/summary.tsv" 2>/dev/null | sed 's/^/  /' || sed 's/^/  /' -- "$OUT/summary.tsv"
if [[ $bench_rc != skipped ]]; then
    say "benchmarks (gpu-bench exit $bench_rc; JSON lines in $OUT/bench.jsonl):"
    if [[ -s $OUT/bench.jsonl ]]; then
        cat -- "$OUT/bench.jsonl"
        "$BENCH" show "$OUT/bench.jsonl" | sed 's/^/  /'
    else
        echo "  (no results written)"
    fi
else
    say "benchmarks: skipped"
fi
say "anchors: $anchors_status"
say "demo: $demo_status"
for dev in cuda cpu; do
    if [[ -f $OUT/demo-$dev/demo.log ]]; then
        say "demo --device $dev, summary table:"
        # The summary table is the block the CLI prints after the progress bars.
        grep -A40 -m1 -E '^(domain|Domain|[|] *domain)' -- "$OUT/demo-$dev/demo.log" | head -40 | sed 's/^/  /' || true
    fi
done

if [[ ${GPU_RUN_PACK_LOGS:-0} == 1 ]]; then
    if tar czf "$OUT/logs.tar.gz" -C "$OUT" logs; then
        rm -rf -- "$OUT/logs"
        say "logs packed into $OUT/logs.tar.gz"
    fi
fi

status=0
if ((n_fail > 0)); then
    say "FAILED: $n_fail of $n_bins test executable(s)"
    status=1
else
    say "ok: $n_bins test executable(s) passed"
fi
if ((demo_failed)); then
    say "FAILED: brainstacks demo --device cuda"
    status=1
fi
if [[ $bench_rc != skipped && $bench_rc != 0 ]]; then
    say "FAILED: gpu-bench exited $bench_rc"
    status=1
fi
# Last, so that it is what a truncated output tail shows: the issue targets of this run.
if [[ $bench_rc != skipped && -s $OUT/bench.jsonl ]]; then
    echo
    say "targets (JSON lines in $OUT/targets.jsonl):"
    "$BENCH" targets "$OUT/bench.jsonl" | sed 's/^/  /'
fi
exit $status
