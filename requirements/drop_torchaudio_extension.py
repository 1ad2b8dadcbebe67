"""Remove torchaudio's C++ extension when it cannot load beside the installed torch.

PyPI's torchaudio is a CUDA build; beside the CPU torch wheel its extension fails
to load (libc10_cuda.so), and while the file exists `import torchaudio` raises
OSError (breaking coqui-tts, and transformers' HubertModel). XTTS, F5-TTS and
vocos only use torchaudio's pure-Python parts, which work without it. Where the
extension loads (a matching CUDA torch), nothing is removed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

spec = importlib.util.find_spec("torchaudio")
if spec is None or spec.origin is None:
    sys.exit(0)
probe = [sys.executable, "-c", "import torchaudio"]
ok = subprocess.run(probe, capture_output=True).returncode == 0
if ok:
    sys.exit(0)
for ext in (Path(spec.origin).parent / "lib").glob("_torchaudio*.so"):
    ext.unlink()
    print(f"removed {ext} (cannot load beside this torch)")
subprocess.run([sys.executable, "-c", "import torchaudio"], check=True)
