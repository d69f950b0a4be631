"""Compiled kernels are cached per version of the quant sources, so a change never loads stale machine code."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numba
import pytest

from risk_pipeline.quant import _numba


def test_cache_directory_is_named_by_the_sources_and_old_versions_are_pruned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = numba.config.CACHE_DIR
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    root = tmp_path / "risk_pipeline" / "numba"
    for i in range(5):  # five earlier versions, oldest first
        old = root / f"old{i}"
        old.mkdir(parents=True)
        os.utime(old, (time.time() - 100 + i, time.time() - 100 + i))
    try:
        here = _numba._use_versioned_cache()
        assert here == root / _numba.source_hash() and numba.config.CACHE_DIR == str(here)
        kept = sorted(p.name for p in root.iterdir())
        assert kept == sorted([here.name, "old3", "old4"])  # the current one and the two most recent others
        # a user's NUMBA_CACHE_DIR wins
        monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))
        assert _numba._use_versioned_cache() is None
    finally:
        numba.config.CACHE_DIR = before


def test_source_hash_covers_every_module_of_the_package() -> None:
    import hashlib

    quant = Path(_numba.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(quant.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    assert _numba.source_hash() == digest.hexdigest()[:16]
    assert len(list(quant.glob("*.py"))) > 20
