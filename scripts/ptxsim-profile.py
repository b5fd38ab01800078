#!/usr/bin/env python3
"""Summarise a ptxsim memory-traffic profile (the JSON lines PTXSIM_PROFILE=FILE writes).

Usage: scripts/ptxsim-profile.py FILE [--kernel SUBSTRING] [--sites N] [--mix] [--json]

For each kernel (all its launches together):
  global  sectors per request, and the efficiency ideal/actual sectors (100% = every sector
          fetched is fully used);
  shared  wavefronts per request, and the bank-conflict factor actual/ideal wavefronts
          (1.00 = conflict-free);
  insts   warp instructions per launch, and mma.sync per launch;
  --mix   the instruction mix per kernel (share of executed instructions by class; for tensor-core
          kernels, the instructions issued per mma, i.e. the issue-slot overhead of the loop).
Then the N instructions (PTX file line) that waste the most: the sectors or wavefronts above the
ideal, summed over launches. These are counts from the addresses the threads used, not times.

Example:
  PTXSIM_PROFILE=/tmp/p.jsonl scripts/gpu-sim.sh gpu_gemm
  scripts/ptxsim-profile.py /tmp/p.jsonl --sites 10
"""

import argparse
import json
import sys
from collections import defaultdict


def load(path):
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"{path}:{n}: not a JSON line: {e}")


def summarise(records, kernel_filter):
    kernels = defaultdict(lambda: {"launches": 0, "warp_instructions": 0, "mma": 0, "mix": defaultdict(int),
                                   "global": [0, 0, 0, 0], "shared": [0, 0, 0, 0]})
    sites = defaultdict(lambda: [0, 0, 0, 0])  # (kernel, line, space, what) -> req, bytes, tx, ideal
    for r in records:
        k = r["kernel"]
        if kernel_filter and kernel_filter not in k:
            continue
        s = kernels[k]
        s["launches"] += 1
        s["warp_instructions"] += r["warp_instructions"]
        s["mma"] += r["mma"]
        for c, n in r.get("mix", {}).items():
            s["mix"][c] += n
        for space in ("global", "shared"):
            t = r[space]
            for i, key in enumerate(("requests", "bytes", "transactions", "ideal")):
                s[space][i] += t[key]
        for site in r["sites"]:
            acc = sites[(k, site["line"], site["space"], site["what"])]
            for i, key in enumerate(("requests", "bytes", "transactions", "ideal")):
                acc[i] += site[key]
    return kernels, sites


def ratio(a, b):
    return a / b if b else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--kernel", default="", help="only kernels whose name contains this")
    ap.add_argument("--sites", type=int, default=15, help="how many wasteful instructions to list")
    ap.add_argument("--mix", action="store_true", help="print each kernel's instruction mix")
    ap.add_argument("--json", action="store_true", help="print the per-kernel summary as JSON")
    args = ap.parse_args()

    kernels, sites = summarise(load(args.file), args.kernel)
    if not kernels:
        sys.exit(f"{args.file}: no launches" + (f" of a kernel matching {args.kernel!r}" if args.kernel else ""))

    rows = []
    for name in sorted(kernels):
        s = kernels[name]
        g, sh = s["global"], s["shared"]
        rows.append({
            "kernel": name,
            "launches": s["launches"],
            "global_requests": g[0],
            "sectors_per_request": ratio(g[2], g[0]),
            "global_efficiency": ratio(g[3], g[2]),
            "shared_requests": sh[0],
            "wavefronts_per_request": ratio(sh[2], sh[0]),
            "bank_conflict_factor": ratio(sh[2], sh[3]),
            "warp_instructions_per_launch": ratio(s["warp_instructions"], s["launches"]),
            "mma_per_launch": ratio(s["mma"], s["launches"]),
            "mix": dict(s["mix"]),
        })
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return

    w = max(len(r["kernel"]) for r in rows)
    print(f"{'kernel':<{w}} {'launch':>6} {'g.req':>9} {'sect/req':>8} {'g.eff':>6} "
          f"{'s.req':>9} {'wave/req':>8} {'conflict':>8} {'insts/launch':>12} {'mma/launch':>10}")
    for r in rows:
        def f(x, fmt):
            return format(x, fmt) if x == x else "-"
        print(f"{r['kernel']:<{w}} {r['launches']:>6} {r['global_requests']:>9} "
              f"{f(r['sectors_per_request'], '8.2f')} {f(100 * r['global_efficiency'], '5.0f')}% "
              f"{r['shared_requests']:>9} {f(r['wavefronts_per_request'], '8.2f')} "
              f"{f(r['bank_conflict_factor'], '8.2f')} {f(r['warp_instructions_per_launch'], '12.0f')} "
              f"{f(r['mma_per_launch'], '10.1f')}")

    if args.mix:
        classes = sorted({c for r in rows for c in r["mix"]}, key=lambda c: -sum(r["mix"].get(c, 0) for r in rows))
        print(f"\ninstruction mix (% of executed instructions; per mma: instructions issued per mma.sync)")
        print(f"{'kernel':<{w}} " + " ".join(f"{c:>9}" for c in classes) + f" {'per mma':>8}")
        for r in rows:
            total = sum(r["mix"].values())
            if not total:
                continue
            cells = " ".join(f"{100 * r['mix'].get(c, 0) / total:9.1f}" for c in classes)
            mma = r["mix"].get("mma", 0)
            print(f"{r['kernel']:<{w}} {cells} {(f'{total / mma:8.1f}' if mma else '       -')}")

    waste = sorted(((tx - ideal, k, line, space, what, req, tx, ideal)
                    for (k, line, space, what), (req, _b, tx, ideal) in sites.items() if tx > ideal),
                   reverse=True)
    if args.sites and waste:
        print(f"\nmost wasteful instructions (transactions above the ideal, all launches):")
        print(f"{'kernel':<{w}} {'line':>5} {'space':<6} {'requests':>9} {'actual':>10} {'ideal':>10}  instruction")
        for extra, k, line, space, what, req, tx, ideal in waste[:args.sites]:
            print(f"{k:<{w}} {line:>5} {space:<6} {req:>9} {tx:>10} {ideal:>10}  {what}")


if __name__ == "__main__":
    main()
