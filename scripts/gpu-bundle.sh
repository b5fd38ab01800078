#!/usr/bin/env bash
# scripts/gpu-bundle.sh: build the GPU test bundle here (no GPU needed), to run on a GPU machine.
#
#   scripts/gpu-bundle.sh            -> gpu-bundle/ (git-ignored), < 64 MiB:
#       bin/<crate>.<test>.xz  the GPU test executables (kernels, tensor, autograd, train) built with
#                        --features cuda (cargo's test profile: opt-level 2, debug assertions on, so
#                        every kernel launch is synchronised and checked); debug info stripped, then
#                        xz-compressed to fit the limit (run.sh unpacks them, with xz or python3)
#       gpu-bench.xz     the benchmark harness (release profile, --features cuda; see
#                        benches/README.md), debug info stripped
#       brainstacks.xz   the CLI (release profile, --features cuda): run.sh runs
#                        `brainstacks demo --quick --device cuda` with it
#       anchors/gpu_kernel_anchors.py   the PyTorch/bitsandbytes kernel anchors, copied when found
#                        (never committed: it lives in the shared folder beside the checkout)
#       wheels/*.whl     only with GPU_BUNDLE_WHEELS=DIR: Python wheels (e.g. bitsandbytes) that
#                        run.sh installs into a scratch folder for the anchors script
#       run.sh           a copy of scripts/gpu-run.sh (tests with REQUIRE_CUDA=1, then benchmarks)
#       MANIFEST         what was built, from which commit, with which toolchain and glibc
# Then on the GPU machine: gpu-bundle/run.sh   (logs under ${OUT:-./gpu-out}).
#
# Environment: CARGO_TARGET_DIR is honoured; GPU_BUNDLE_PACKAGES="-p a -p b" overrides the test
# packages (default: -p brainstacks-kernels -p brainstacks-tensor -p brainstacks-autograd -p brainstacks-train
# --test gpu_*, the GPU test binaries only: the CPU ones would push the bundle past 64 MiB);
# GPU_BUNDLE_BENCH=0 leaves gpu-bench out; GPU_BUNDLE_CLI=0 leaves the brainstacks CLI out;
# GPU_BUNDLE_ANCHORS=FILE names the anchors script (default: shared/anchors/gpu_kernel_anchors.py
# inside the checkout, else ../shared/anchors/ beside it; GPU_BUNDLE_ANCHORS= (empty) leaves it
# out); GPU_BUNDLE_WHEELS=DIR adds DIR/*.whl; GPU_BUNDLE_MAX_MIB overrides the size limit (64).
# Needs python3 (to read cargo's JSON messages), strip (binutils) and xz.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd -- "$ROOT"
BUNDLE="$ROOT/gpu-bundle"
MAX_MIB="${GPU_BUNDLE_MAX_MIB:-64}"
read -r -a PACKAGES <<<"${GPU_BUNDLE_PACKAGES:--p brainstacks-kernels -p brainstacks-tensor -p brainstacks-autograd -p brainstacks-train --test gpu_*}"

say() { printf 'gpu-bundle: %s\n' "$*"; }
die() {
    printf 'gpu-bundle: error: %s\n' "$*" >&2
    exit 1
}
command -v python3 >/dev/null 2>&1 || die "python3 is needed to read cargo's JSON output"
command -v xz >/dev/null 2>&1 || die "xz is needed to compress the executables"

# strip (when present) and xz-compress one executable into the bundle: DEST gets DEST.xz.
pack() {
    local src=$1 dest=$2
    cp -- "$src" "$dest"
    if command -v strip >/dev/null 2>&1; then strip --strip-debug -- "$dest"; fi
    xz -6 -T0 -f -- "$dest"
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/gpu-bundle.XXXXXX")"
trap 'rm -rf -- "$WORK"' EXIT

say "building: cargo test ${PACKAGES[*]} --features cuda --no-run --message-format=json"
if ! cargo test "${PACKAGES[@]}" --features cuda --no-run --message-format=json-render-diagnostics \
    >"$WORK/cargo.json"; then
    die "cargo build of the test executables failed"
fi

# Test executables: compiler-artifact messages with profile.test == true and an executable.
python3 - "$WORK/cargo.json" >"$WORK/exes" <<'PY'
import json, sys
seen = set()
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.strip()
    if not line.startswith("{"):
        continue
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("profile", {}).get("test"):
        continue
    exe = m.get("executable")
    if exe and exe not in seen:
        seen.add(exe)
        kind = ",".join(m["target"]["kind"])
        name = m["target"]["name"] if kind != "lib" else m["target"]["name"] + "-unittests"
        # Crates share test names (gpu_moe_lora in kernels, tensor and autograd): prefix the
        # crate's folder so no binary overwrites another.
        crate = m.get("manifest_path", "").replace("\\", "/").split("/")[-2:-1] or ["crate"]
        print(f"{crate[0]}.{name}\t{exe}")
PY
[[ -s $WORK/exes ]] || die "cargo reported no test executables"

rm -rf -- "$BUNDLE"
mkdir -p -- "$BUNDLE/bin"
while IFS=$'\t' read -r name exe; do
    pack "$exe" "$BUNDLE/bin/$name"
    say "  bin/$name.xz  <- $(basename -- "$exe") ($(du -h -- "$BUNDLE/bin/$name.xz" | cut -f1))"
done <"$WORK/exes"

# release_bin PACKAGE BIN: builds BIN of PACKAGE (release profile, --features cuda) and packs it
# into the bundle as BIN.xz.
release_bin() {
    local pkg=$1 bin=$2 exe
    say "building: cargo build --release -p $pkg --features cuda --bin $bin"
    if ! cargo build --release -p "$pkg" --features cuda --bin "$bin" \
        --message-format=json-render-diagnostics >"$WORK/$bin.json"; then
        die "cargo build of $bin failed"
    fi
    exe="$(python3 - "$WORK/$bin.json" "$bin" <<'PY'
import json, sys
for line in open(sys.argv[1], encoding="utf-8"):
    if line.startswith("{"):
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[2] and m.get("executable"):
            print(m["executable"])
PY
)"
    [[ -n $exe && -x $exe ]] || die "cargo reported no $bin executable"
    pack "$exe" "$BUNDLE/$bin"
    say "  $bin.xz  ($(du -h -- "$BUNDLE/$bin.xz" | cut -f1))"
}

# ---- the benchmark harness (release profile: timings need optimised, unchecked launches) --------
bench_line="gpu-bench: not built (GPU_BUNDLE_BENCH=0)"
if [[ ${GPU_BUNDLE_BENCH:-1} != 0 ]]; then
    release_bin brainstacks-benches gpu-bench
    bench_line="gpu-bench: release profile, --features cuda (loads libcublas at run time, as a yardstick only)"
fi

# ---- the CLI, for `brainstacks demo --device cuda` on the GPU machine ---------------------------
cli_line="brainstacks: not built (GPU_BUNDLE_CLI=0)"
if [[ ${GPU_BUNDLE_CLI:-1} != 0 ]]; then
    release_bin brainstacks-train brainstacks
    cli_line="brainstacks: release profile, --features cuda (run.sh: demo --quick on cuda, then on cpu)"
fi

# ---- the kernel anchors script (never committed; copied only into the ignored bundle) ----------
anchors="${GPU_BUNDLE_ANCHORS-}"
if [[ -z ${GPU_BUNDLE_ANCHORS+set} ]]; then
    for c in "$ROOT/shared/anchors/gpu_kernel_anchors.py" "$ROOT/../shared/anchors/gpu_kernel_anchors.py"; do
        if [[ -f $c ]]; then
            anchors="$c"
            break
        fi
    done
fi
anchors_line="anchors:   none"
if [[ -n $anchors ]]; then
    [[ -f $anchors ]] || die "GPU_BUNDLE_ANCHORS=$anchors: no such file"
    mkdir -p -- "$BUNDLE/anchors"
    cp -- "$anchors" "$BUNDLE/anchors/gpu_kernel_anchors.py"
    say "  anchors/gpu_kernel_anchors.py  <- $anchors"
    anchors_line="anchors:   $(basename -- "$anchors") (sha256 $(sha256sum -- "$anchors" | cut -c1-16))"
fi

# ---- optional wheels for the anchors script ----------------------------------------------------
if [[ -n ${GPU_BUNDLE_WHEELS:-} ]]; then
    shopt -s nullglob
    wheels=("$GPU_BUNDLE_WHEELS"/*.whl)
    shopt -u nullglob
    ((${#wheels[@]} > 0)) || die "GPU_BUNDLE_WHEELS=$GPU_BUNDLE_WHEELS holds no .whl"
    mkdir -p -- "$BUNDLE/wheels"
    cp -- "${wheels[@]}" "$BUNDLE/wheels/"
    say "  wheels/: ${#wheels[@]} wheel(s) ($(du -sh -- "$BUNDLE/wheels" | cut -f1))"
fi

cp -- "$ROOT/scripts/gpu-run.sh" "$BUNDLE/run.sh"
chmod +x -- "$BUNDLE/run.sh"

{
    echo "built:     $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
    echo "commit:    $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (+ uncommitted changes)')"
    echo "toolchain: $(rustc --version)"
    echo "glibc:     $(ldd --version 2>&1 | head -1)"
    echo "packages:  ${PACKAGES[*]} --features cuda (cargo test profile)"
    echo "$bench_line"
    echo "$cli_line"
    echo "$anchors_line"
    echo "cudarc:    dynamic loading of libcuda, built for CUDA 12.8 (needs a driver reporting CUDA >= 12.8)"
} >"$BUNDLE/MANIFEST"

bytes="$(du -sb -- "$BUNDLE" | cut -f1)"
mib=$(((bytes + 1048575) / 1048576))
if ((bytes > MAX_MIB * 1048576)); then
    die "bundle is $mib MiB, over the $MAX_MIB MiB limit"
fi
say "ok: $BUNDLE ($mib MiB, limit $MAX_MIB MiB); run there: gpu-bundle/run.sh"
