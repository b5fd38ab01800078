#!/usr/bin/env bash
# scripts/ptx-check.sh: assemble every hand-written PTX kernel with ptxas, no GPU needed.
#
# Every `*.ptx` under kernels/ is assembled with `ptxas --gpu-name sm_XX -v FILE -o /dev/null` for
# sm_80 and sm_90, and a table per file / function / arch shows registers, stack frame, spill stores,
# spill loads and static shared memory. The script exits non-zero on any assembly error, on any
# non-zero spill (stores or loads, entries and device functions alike), or when it cannot read
# ptxas's report.
#
# Arch rule: a file is assembled for each of sm_80 and sm_90 that is not older than its `.target`
# (so `.target sm_80` gets both, as DESIGN.md requires). An arch-specific target (`sm_90a`, wgmma/TMA
# kernels) is assembled for exactly that target, since ptxas refuses it for anything else.
#
# Before the kernels, a self-test runs on every invocation, through the same code path, so that the
# check can never pass silently (broken install, changed ptxas output, broken parser):
#   scripts/ptx-selftest/good.ptx   must assemble on sm_80 and sm_90 with zero spills
#   scripts/ptx-selftest/bad.ptx    must be rejected by ptxas (planted syntax error)
#   scripts/ptx-selftest/spill.ptx  must assemble and be reported as spilling (.maxnreg 24)
#
# ptxas lookup: $PTXAS, then <repo>/.tools/nvcc (installed by this script), then PATH. If none is
# found it runs `python3 -m pip install --target <repo>/.tools/nvcc nvidia-cuda-nvcc-cu12==12.9.86`
# (the wheel ships bin/ptxas; .tools/ is git-ignored). Later runs reuse it and cost a few seconds.
#
# Environment:
#   PTXAS=/path/to/ptxas    use this ptxas (no lookup, no install)
#   PTX_KERNELS_DIR=DIR     scan DIR instead of <repo>/kernels
#   PTX_SELFTEST_DIR=DIR    fixtures for the self-test instead of <repo>/scripts/ptx-selftest
#   PTX_CHECK_VERBOSE=1     print ptxas's full -v output for every file and arch
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
WHEEL_SPEC="nvidia-cuda-nvcc-cu12==12.9.86"
TOOLS_DIR="$ROOT/.tools/nvcc"
STAMP_NAME=".brainstacks-installed"
BASE_ARCHS=(sm_80 sm_90)
KERNELS_DIR="${PTX_KERNELS_DIR:-$ROOT/kernels}"
SELFTEST_DIR="${PTX_SELFTEST_DIR:-$ROOT/scripts/ptx-selftest}"
VERBOSE="${PTX_CHECK_VERBOSE:-0}"

say() { printf 'ptx-check: %s\n' "$*"; }
die() {
    printf 'ptx-check: error: %s\n' "$*" >&2
    exit 1
}

WORK="$(mktemp -d "${TMPDIR:-/tmp}/ptx-check.XXXXXX")"
INSTALL_TMP=""
cleanup() {
    rm -rf -- "$WORK"
    if [[ -n $INSTALL_TMP ]]; then rm -rf -- "$INSTALL_TMP"; fi
}
trap cleanup EXIT

# Path relative to the repo root, for display.
rel() {
    local p=$1
    case $p in
    "$ROOT"/*) printf '%s\n' "${p#"$ROOT"/}" ;;
    *) printf '%s\n' "$p" ;;
    esac
}

# ---------------------------------------------------------------------------------------------
# Locate or install ptxas
# ---------------------------------------------------------------------------------------------

# Prints the ptxas inside .tools/nvcc if a complete install of WHEEL_SPEC is there.
tools_ptxas() {
    local stamp="$TOOLS_DIR/$STAMP_NAME" p
    [[ -f $stamp ]] || return 1
    [[ "$(cat -- "$stamp")" == "$WHEEL_SPEC" ]] || return 1
    p="$(find "$TOOLS_DIR" -type f -path '*/bin/ptxas' -print -quit 2>/dev/null || true)"
    [[ -n $p ]] || return 1
    [[ -x $p ]] || chmod +x -- "$p"
    printf '%s\n' "$p"
}

install_ptxas() {
    command -v python3 >/dev/null 2>&1 ||
        die "ptxas not found and python3 is missing to install it ($WHEEL_SPEC); or set PTXAS=/path/to/ptxas"
    python3 -m pip --version >/dev/null 2>&1 ||
        die "ptxas not found and 'python3 -m pip' is unavailable (Debian: apt-get install python3-pip); or set PTXAS=/path/to/ptxas"
    mkdir -p -- "$ROOT/.tools"
    INSTALL_TMP="$(mktemp -d "$ROOT/.tools/nvcc.tmp.XXXXXX")"
    say "ptxas not found; installing it: python3 -m pip install --target .tools/nvcc $WHEEL_SPEC"
    # --target does not touch any Python environment (so no PEP 668 complaint on Debian).
    if ! PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 \
        python3 -m pip install --quiet --no-deps --no-compile --target "$INSTALL_TMP" "$WHEEL_SPEC"; then
        die "pip install of $WHEEL_SPEC failed"
    fi
    local p
    p="$(find "$INSTALL_TMP" -type f -path '*/bin/ptxas' -print -quit)"
    [[ -n $p ]] || die "the $WHEEL_SPEC wheel has no bin/ptxas (layout changed?)"
    chmod +x -- "$p"
    printf '%s\n' "$WHEEL_SPEC" >"$INSTALL_TMP/$STAMP_NAME"
    # Replace a stale or partial install; if another run finished first, keep theirs.
    if ! tools_ptxas >/dev/null; then
        rm -rf -- "$TOOLS_DIR"
        mv -T -- "$INSTALL_TMP" "$TOOLS_DIR" 2>/dev/null || true
    fi
    rm -rf -- "$INSTALL_TMP"
    INSTALL_TMP=""
}

locate_ptxas() {
    local p
    if [[ -n ${PTXAS:-} ]]; then
        [[ -f $PTXAS && -x $PTXAS ]] || die "PTXAS=$PTXAS is not an executable file"
        PTXAS_BIN="$PTXAS"
        PTXAS_FROM="\$PTXAS"
    elif p="$(tools_ptxas)"; then
        PTXAS_BIN="$p"
        PTXAS_FROM=".tools ($WHEEL_SPEC)"
    elif p="$(command -v ptxas 2>/dev/null)"; then
        PTXAS_BIN="$p"
        PTXAS_FROM="PATH"
    else
        install_ptxas
        p="$(tools_ptxas)" || die "ptxas still not found under .tools/nvcc after installing $WHEEL_SPEC"
        PTXAS_BIN="$p"
        PTXAS_FROM=".tools ($WHEEL_SPEC, installed now)"
    fi
    local ver
    ver="$("$PTXAS_BIN" --version 2>&1)" || die "$PTXAS_BIN does not run: $ver"
    ver="$(printf '%s\n' "$ver" | grep -m1 -i 'release' || true)"
    say "ptxas: $(rel "$PTXAS_BIN") [from $PTXAS_FROM] ${ver:-(unknown version)}"
}

# ---------------------------------------------------------------------------------------------
# Assemble one file and read ptxas -v
# ---------------------------------------------------------------------------------------------

# Reads `ptxas -v` output on stdin; prints one tab-separated record per function, in order:
#   kind name regs stack spill_stores spill_loads smem seen
# kind is entry or func; regs is "-" for device functions; seen is 1 when the
# "N bytes stack frame, N bytes spill stores, N bytes spill loads" line was parsed.
parse_ptxas_v() {
    awk '
    function add(name) { if (!(name in idx)) { idx[name] = ++count; order[count] = name } }
    /Compiling entry function \047/ {
        s = $0; sub(/.*Compiling entry function \047/, "", s); sub(/\047.*/, "", s)
        cur = s; kind[s] = "entry"; add(s); next
    }
    /Function properties for / {
        s = $0; sub(/.*Function properties for /, "", s); sub(/[ \t\r]+$/, "", s)
        prop = s; add(s); if (!(s in kind)) kind[s] = "func"; next
    }
    /bytes stack frame/ && prop != "" {
        # "    176 bytes stack frame, 176 bytes spill stores, 216 bytes spill loads"
        n = split($0, t, /[ ,\t]+/)
        for (i = 3; i <= n; i++) {
            if (t[i-1] != "bytes" || t[i-2] !~ /^[0-9]+$/) continue
            if (t[i] == "stack" && t[i+1] == "frame") stack[prop] = t[i-2] + 0
            if (t[i] == "spill" && t[i+1] == "stores") st[prop] = t[i-2] + 0
            if (t[i] == "spill" && t[i+1] == "loads") ld[prop] = t[i-2] + 0
        }
        if ((prop in st) && (prop in ld) && (prop in stack)) seen[prop] = 1
        prop = ""; next
    }
    /Used [0-9]+ registers/ && cur != "" {
        n = split($0, t, /[ ,\t]+/)
        for (i = 1; i <= n; i++) {
            if (t[i] == "Used" && t[i+1] ~ /^[0-9]+$/ && t[i+2] == "registers") regs[cur] = t[i+1] + 0
            if (t[i] == "smem" && t[i-1] == "bytes" && t[i-2] ~ /^[0-9]+$/) smem[cur] = t[i-2] + 0
        }
        cur = ""; next
    }
    END {
        for (k = 1; k <= count; k++) {
            s = order[k]
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", kind[s], s,
                (kind[s] == "entry" ? ((s in regs) ? regs[s] : "?") : "-"),
                ((s in stack) ? stack[s] : "?"), ((s in st) ? st[s] : "?"), ((s in ld) ? ld[s] : "?"),
                (kind[s] == "entry" ? ((s in smem) ? smem[s] : 0) : "-"),
                ((s in seen) ? 1 : 0)
        }
    }'
}

# Archs to assemble FILE for (see the arch rule at the top).
archs_for() {
    local file=$1 target num a out=()
    target="$(grep -m1 -E '^[[:space:]]*\.target[[:space:]]' -- "$file" | awk '{print $2}' | tr -d ',' || true)"
    if [[ $target =~ ^sm_[0-9]+[af]$ ]]; then
        printf '%s\n' "$target"
        return
    fi
    if [[ $target =~ ^sm_([0-9]+)$ ]]; then
        num=${BASH_REMATCH[1]}
        for a in "${BASE_ARCHS[@]}"; do
            if ((${a#sm_} >= num)); then out+=("$a"); fi
        done
        if ((${#out[@]} == 0)); then out=("$target"); fi
    else
        out=("${BASE_ARCHS[@]}") # no/odd .target: let ptxas judge it
    fi
    printf '%s\n' "${out[@]}"
}

# check_file FILE [ARCH...]
# Assembles FILE for each ARCH (default: archs_for FILE). Appends table rows to $WORK/rows.
# Sets CF_RESULT to the worst outcome over all archs: error > parse > spill > ok, and per arch:
#   CF_ARCH_RESULT[arch]  ok | error | parse | spill
#   CF_RECORDS[arch]      parse_ptxas_v records
#   CF_LOG[arch]          path of ptxas's output
declare -A CF_ARCH_RESULT CF_RECORDS CF_LOG
CF_RESULT=ok
CF_ARCHS=()
check_file() {
    local file=$1
    shift
    local shown rc recs arch res kind name regs stack st ld smem seen n_entries
    shown="$(rel "$file")"
    if (($# > 0)); then CF_ARCHS=("$@"); else mapfile -t CF_ARCHS < <(archs_for "$file"); fi
    CF_RESULT=ok
    CF_ARCH_RESULT=()
    CF_RECORDS=()
    CF_LOG=()
    for arch in "${CF_ARCHS[@]}"; do
        local log="$WORK/log.$arch.$RANDOM$RANDOM"
        if "$PTXAS_BIN" --gpu-name "$arch" -v "$file" -o /dev/null >"$log" 2>&1; then rc=0; else rc=$?; fi
        CF_LOG[$arch]="$log"
        if [[ $VERBOSE == 1 ]]; then
            say "ptxas --gpu-name $arch -v $shown  (exit $rc)"
            sed 's/^/    | /' -- "$log"
        fi
        recs="$(parse_ptxas_v <"$log")"
        CF_RECORDS[$arch]="$recs"
        res=ok
        if ((rc != 0)); then
            res=error
            printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$shown" "-" "$arch" "-" "-" "-" "-" "-" \
                "ASSEMBLY ERROR (ptxas exit $rc)" >>"$WORK/rows"
        else
            n_entries=0
            while IFS=$'\t' read -r kind name regs stack st ld smem seen; do
                [[ -n $kind ]] || continue
                local status=ok label=$name
                if [[ $kind == entry ]]; then n_entries=$((n_entries + 1)); else label="$name (.func)"; fi
                if [[ $seen != 1 || ($kind == entry && ! $regs =~ ^[0-9]+$) ]]; then
                    status="UNPARSED ptxas report"
                    res=parse
                elif ((st != 0 || ld != 0)); then
                    status="SPILL"
                    if [[ $res == ok ]]; then res=spill; fi
                fi
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$shown" "$label" "$arch" "$regs" "$stack" \
                    "$st" "$ld" "$smem" "$status" >>"$WORK/rows"
            done <<<"$recs"
            # A file that declares entries must show them in the report, or the parser is stale.
            if ((n_entries == 0)) && grep -qE '^[[:space:]]*(\.visible[[:space:]]+|\.weak[[:space:]]+)?\.entry[[:space:]]' -- "$file"; then
                res=parse
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$shown" "-" "$arch" "-" "-" "-" "-" "-" \
                    "UNPARSED: no entry found in ptxas -v output" >>"$WORK/rows"
            fi
        fi
        CF_ARCH_RESULT[$arch]=$res
        case $res in
        error) CF_RESULT=error ;;
        parse) if [[ $CF_RESULT != error ]]; then CF_RESULT=parse; fi ;;
        spill) if [[ $CF_RESULT == ok ]]; then CF_RESULT=spill; fi ;;
        esac
    done
}

# Field F (1-based, of parse_ptxas_v's record) of function NAME for ARCH, from the last check_file.
record_field() {
    local arch=$1 name=$2 field=$3
    awk -F'\t' -v n="$name" -v f="$field" '$2 == n { print $f; exit }' <<<"${CF_RECORDS[$arch]:-}"
}

print_table() {
    local rows=$1
    # Rows of one file and function stay together (sm_80 next to sm_90), in order of appearance.
    {
        printf 'file\tfunction\tarch\tregs\tstack\tspill st\tspill ld\tsmem\tstatus\n'
        cat -- "$rows"
    } | awk -F'\t' '
        function fmt(r,    i, line) {
            line = "  "
            for (i = 1; i <= nf[r]; i++) {
                if (i >= 4 && i <= 8) line = line sprintf("%" w[i] "s", cell[r, i])   # numbers: right
                else if (i < nf[r]) line = line sprintf("%-" w[i] "s", cell[r, i])
                else line = line cell[r, i]
                if (i < nf[r]) line = line "  "
            }
            return line
        }
        {
            for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) }
            nf[NR] = NF
            if (NR > 1) {
                key = $1 SUBSEP $2
                if (!(key in nrows)) { nkeys++; keys[nkeys] = key }
                rowof[key, ++nrows[key]] = NR
            }
        }
        END {
            print fmt(1)
            line = "  "
            for (i = 1; i <= nf[1]; i++) {
                n = (i < nf[1]) ? w[i] : length(cell[1, i])
                for (j = 0; j < n; j++) line = line "-"
                if (i < nf[1]) line = line "  "
            }
            print line
            for (k = 1; k <= nkeys; k++)
                for (j = 1; j <= nrows[keys[k]]; j++) print fmt(rowof[keys[k], j])
        }'
}

show_log() {
    sed 's/^/    | /' -- "$1"
}

# ---------------------------------------------------------------------------------------------
# Self-test: the checker must accept a good kernel, reject a bad one and see a spill
# ---------------------------------------------------------------------------------------------

selftest() {
    local good="$SELFTEST_DIR/good.ptx" bad="$SELFTEST_DIR/bad.ptx" spill="$SELFTEST_DIR/spill.ptx"
    local failed=0 arch v1 v2 v3 detail
    local f
    for f in "$good" "$bad" "$spill"; do
        [[ -f $f ]] || die "self-test fixture missing: $(rel "$f")"
    done
    : >"$WORK/rows"

    # good.ptx: assembles for sm_80 and sm_90, selftest_add_f32 parsed, zero spills.
    check_file "$good" "${BASE_ARCHS[@]}"
    detail=""
    for arch in "${BASE_ARCHS[@]}"; do
        v1="$(record_field "$arch" selftest_add_f32 3)"
        v2="$(record_field "$arch" selftest_add_f32 5)"
        v3="$(record_field "$arch" selftest_add_f32 6)"
        if [[ ${CF_ARCH_RESULT[$arch]} != ok || ! $v1 =~ ^[0-9]+$ || $v2 != 0 || $v3 != 0 ]]; then
            say "SELF-TEST FAILED: $(rel "$good") on $arch: expected to assemble with selftest_add_f32 reported and zero spills (got: ${CF_ARCH_RESULT[$arch]}, regs='$v1' spill stores='$v2' loads='$v3')"
            show_log "${CF_LOG[$arch]}"
            failed=1
        else
            detail+="${detail:+, }$arch: $v1 regs"
        fi
    done
    if ((!failed)); then say "self-test $(rel "$good"): assembles, no spills ($detail) ok"; fi

    # bad.ptx: ptxas must reject it on every arch.
    check_file "$bad" "${BASE_ARCHS[@]}"
    local bad_ok=1
    for arch in "${BASE_ARCHS[@]}"; do
        if [[ ${CF_ARCH_RESULT[$arch]} != error ]]; then
            say "SELF-TEST FAILED: $(rel "$bad") on $arch: ptxas accepted a file with a planted syntax error (result: ${CF_ARCH_RESULT[$arch]})"
            show_log "${CF_LOG[$arch]}"
            failed=1
            bad_ok=0
        fi
    done
    if ((bad_ok)); then say "self-test $(rel "$bad"): rejected by ptxas on ${BASE_ARCHS[*]} ok"; fi

    # spill.ptx: assembles, and the parser reports spill stores for selftest_spill_f32.
    check_file "$spill" "${BASE_ARCHS[@]}"
    detail=""
    local spill_ok=1
    for arch in "${BASE_ARCHS[@]}"; do
        v2="$(record_field "$arch" selftest_spill_f32 5)"
        v3="$(record_field "$arch" selftest_spill_f32 6)"
        if [[ ${CF_ARCH_RESULT[$arch]} != spill || ! $v2 =~ ^[0-9]+$ ]] || ((v2 == 0)); then
            say "SELF-TEST FAILED: $(rel "$spill") on $arch: expected to assemble and be detected as spilling (got: ${CF_ARCH_RESULT[$arch]}, spill stores='$v2' loads='$v3')"
            show_log "${CF_LOG[$arch]}"
            failed=1
            spill_ok=0
        else
            detail+="${detail:+, }$arch: $v2 B stores, $v3 B loads"
        fi
    done
    if ((spill_ok)); then say "self-test $(rel "$spill"): spill detected ($detail) ok"; fi

    if ((failed)); then
        die "self-test failed: the checker cannot be trusted; fix ptxas or this script before reading any result"
    fi
}

# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------

locate_ptxas
selftest

if [[ -n ${PTX_KERNELS_DIR:-} && ! -d $KERNELS_DIR ]]; then
    die "PTX_KERNELS_DIR=$KERNELS_DIR is not a directory"
fi
FILES=()
if [[ -d $KERNELS_DIR ]]; then
    mapfile -d '' -t FILES < <(find "$KERNELS_DIR" -type f -name '*.ptx' -print0 | LC_ALL=C sort -z)
fi
if ((${#FILES[@]} == 0)); then
    say "no PTX files under $(rel "$KERNELS_DIR")/ yet"
    exit 0
fi

: >"$WORK/rows"
n_err=0
n_spill=0
n_parse=0
n_warn=0
for f in "${FILES[@]}"; do
    check_file "$f"
    for arch in "${CF_ARCHS[@]}"; do
        case ${CF_ARCH_RESULT[$arch]} in
        error)
            n_err=$((n_err + 1))
            say "ASSEMBLY ERROR: $(rel "$f") for $arch:"
            show_log "${CF_LOG[$arch]}"
            ;;
        parse)
            n_parse=$((n_parse + 1))
            say "could not read ptxas's report for $(rel "$f") on $arch:"
            show_log "${CF_LOG[$arch]}"
            ;;
        spill) n_spill=$((n_spill + 1)) ;;
        esac
        if [[ ${CF_ARCH_RESULT[$arch]} != error ]] && grep -q 'warning' -- "${CF_LOG[$arch]}"; then
            n_warn=$((n_warn + 1))
            say "ptxas warnings for $(rel "$f") on $arch:"
            grep 'warning' -- "${CF_LOG[$arch]}" | sed 's/^/    | /'
        fi
    done
done

say "${#FILES[@]} PTX file(s) under $(rel "$KERNELS_DIR")/ (smem = static shared bytes; stack/spills in bytes):"
print_table "$WORK/rows"

if ((n_err + n_spill + n_parse > 0)); then
    die "$n_err assembly error(s), $n_spill file/arch pair(s) with spills, $n_parse unreadable report(s)"
fi
warn_note=""
if ((n_warn > 0)); then warn_note=" ($n_warn file/arch pair(s) with ptxas warnings, shown above)"; fi
say "ok: ${#FILES[@]} file(s), no assembly errors, no spills$warn_note"
