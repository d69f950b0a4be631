"""A module of this package as it was at another git revision, for benchmarks that run old and new code side by side."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def module_at(ref: str, module: str) -> ModuleType:
    """``module`` (dotted, e.g. ``risk_pipeline.quant.hedging``) from ``git show REF:path``, imported under the name
    ``<last part>_old``; its own imports resolve to the current package."""
    relative = module.replace(".", "/") + ".py"
    text = subprocess.run(
        ["git", "show", f"{ref}:{relative}"], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    name = module.rsplit(".", 1)[-1] + "_old"
    path = Path(tempfile.gettempdir()) / f"{name}_{os.getpid()}.py"
    path.write_text(text)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    finally:
        path.unlink()
    return mod
