#!/usr/bin/env python3
"""Copy a wheel without the native libraries a GPU machine will not load, so it fits the bundle.

bitsandbytes ships one library per CUDA and ROCm version (about 41 MiB in all); the GPU machine
loads only the one matching its PyTorch build (CUDA 13.0 there: libbitsandbytes_cuda130.so). This
keeps the libraries whose file name contains one of the --keep markers, drops the other
`lib*_cuda*.so` / `lib*_rocm*.so` files, and rewrites RECORD to list exactly what is left.

    scripts/slim-wheel.py WHEEL OUT_DIR [--keep cuda130 --keep cuda132]
    GPU_BUNDLE_WHEELS=OUT_DIR scripts/gpu-bundle.sh
"""

import argparse
import os
import re
import sys
import zipfile

NATIVE = re.compile(r"lib[^/]*_(cuda|rocm)\d+\.so$")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheel")
    ap.add_argument("out_dir")
    ap.add_argument("--keep", action="append", default=None, help="marker of a library to keep (default: cuda130)")
    args = ap.parse_args()
    keep = args.keep or ["cuda130"]
    os.makedirs(args.out_dir, exist_ok=True)
    out_path = os.path.join(args.out_dir, os.path.basename(args.wheel))
    dropped = []
    with zipfile.ZipFile(args.wheel) as src, zipfile.ZipFile(out_path, "w", zipfile.ZIP_DEFLATED) as dst:
        names = [i.filename for i in src.infolist()]
        for name in names:
            if NATIVE.search(name) and not any(k in os.path.basename(name) for k in keep):
                dropped.append(name)
        for info in src.infolist():
            if info.filename in dropped:
                continue
            data = src.read(info.filename)
            if info.filename.endswith(".dist-info/RECORD"):
                lines = data.decode("utf-8").splitlines()
                data = ("\n".join(line for line in lines if line.split(",", 1)[0] not in dropped) + "\n").encode("utf-8")
            dst.writestr(info, data)
    kept_mib = os.path.getsize(out_path) / 2**20
    print(f"{out_path}: dropped {len(dropped)} native libraries, {kept_mib:.1f} MiB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
