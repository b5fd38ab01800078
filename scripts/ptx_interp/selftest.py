#!/usr/bin/env python3
"""Self-test of the PTX interpreter: planted bugs in the real kernels must be caught, so that the
checks can never pass silently (a broken interpreter that accepts anything fails here).

Each mutation is one edit of the PTX text that a plausible hand-written bug would make: a dropped
barrier (caught only because warps run one at a time), a wrong cp.async wait depth, swapped
bf16x2 halves, a wrong nibble. Usage: python3 scripts/ptx_interp/selftest.py
"""
import contextlib
import io
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import check_gemm  # noqa: E402
import check_nf4  # noqa: E402
import interp as pi  # noqa: E402

KERNELS = os.path.join(HERE, '..', '..', 'kernels', 'src')
NF4 = open(os.path.join(KERNELS, 'nf4', 'nf4.ptx')).read()
GEMM = open(os.path.join(KERNELS, 'gemm', 'gemm_bf16.ptx')).read()

MUTATIONS = [
    ('nf4 tc: bf16x2 halves swapped', NF4, 'cvt.rn.bf16x2.f32 %d0, %f_o, %f_e',
     'cvt.rn.bf16x2.f32 %d0, %f_e, %f_o',
     lambda m, r: check_nf4.case_tc(m, r, 19, 10, 128, 136, False, False)),
    ('nf4 tc: barrier after the stage copies dropped', NF4,
     "cp.async.wait_all;                                // this thread's As copies have landed\n"
     "    bar.sync        0;", 'cp.async.wait_all;',
     lambda m, r: check_nf4.case_tc(m, r, 19, 10, 128, 136, False, False)),
    ('nf4 tc: barrier before overwriting the stage dropped', NF4,
     '@%p_c bra       TC_EPILOGUE;\n    bar.sync        0;', '@%p_c bra       TC_EPILOGUE;',
     lambda m, r: check_nf4.case_tc(m, r, 19, 10, 128, 136, False, False)),
    ('nf4 skinny: reduction barrier dropped', NF4,
     'lanes of a quarter-warp phase (rows 64 bytes apart) would share 4 bank groups, 4-way.\n'
     '    bar.sync        0;', 'lanes of a quarter-warp phase (rows 64 bytes apart) would share 4 bank groups, 4-way.',
     lambda m, r: check_nf4.case_skinny(m, r, 3, 37, 192, 200, False, False)),
    ('nf4 dequant: nibble order swapped', NF4, 'bfe.u32         %r_t0, %r_w, 4, 4;',
     'bfe.u32         %r_t0, %r_w, 0, 4;',
     lambda m, r: check_nf4.case_dequant(m, r, 3, 128, False)),
    ('gemm: main-loop barrier dropped', GEMM,
     "bar.sync        0;                         // ... everyone's; all reads of tile kt are done",
     '', lambda m, r: check_gemm.case(m, r, 'nt', 'f32', False, 19, 21, 136, (0, 0, 0))),
    ('gemm: cp.async waits one tile too few', GEMM,
     'cp.async.wait_group 2;              // tile kt + 1', 'cp.async.wait_group 3;              // tile kt + 1',
     lambda m, r: check_gemm.case(m, r, 'nn', 'f32', False, 19, 21, 136, (0, 0, 0))),
]


def main():
    ok = True
    for name, src, old, new, run in MUTATIONS:
        if old not in src:
            print(f'selftest: {name}: pattern not found (kernel changed? update the mutation)')
            ok = False
            continue
        mod = pi.Module(src.replace(old, new))
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the planted bug's failure report
                passed = run(mod, random.Random(3))
        except AssertionError as e:
            passed = False
            print(f'  (interpreter: {str(e)[:120]})')
        print(f'selftest: {name}: {"caught" if not passed else "NOT CAUGHT"}')
        ok &= not passed
    print('selftest ok' if ok else 'selftest FAILED')
    sys.exit(0 if ok else 1)


if __name__ == '__main__':
    main()
