"""Shared fixtures: the repository root on sys.path, data files, a CLI runner.

No test touches the user's home: before collection every cache variable points into
a temporary folder (for code run at import time), and an autouse fixture gives each
test its own empty cache (``isolated_cache``), inherited by subprocesses.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

_SESSION_TMP: str | None = None


def pytest_configure(config) -> None:
    global _SESSION_TMP
    _SESSION_TMP = tempfile.mkdtemp(prefix="ntkhgm-tests-")
    os.environ["NTKHGM_CACHE_DIR"] = os.path.join(_SESSION_TMP, "cache")
    os.environ["XDG_CACHE_HOME"] = os.path.join(_SESSION_TMP, "xdg")


def pytest_unconfigure(config) -> None:
    if _SESSION_TMP is not None:
        shutil.rmtree(_SESSION_TMP, ignore_errors=True)

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run the checkout even when ntkhgm is not installed
    sys.path.insert(0, str(ROOT))

DATA = ROOT / "data"  # the example CSV files (package data lives in ntkhgm/)


@pytest.fixture
def data_dir() -> Path:
    return DATA


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for running ``python -m ntkhgm`` on this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("NO_COLOR", "1")
    return env


def relu_ntk_reference(X1, X2, depth):
    """Arora et al.'s ReLU NTK written out independently (arc-cosine kernels, cσ = 2)."""
    sig = X1 @ X2.T
    d1 = np.sum(X1 * X1, axis=1)
    d2 = np.sum(X2 * X2, axis=1)
    theta_ntk = sig.copy()
    for _ in range(depth):
        norm = np.sqrt(np.outer(d1, d2))
        safe = np.where(norm > 0, norm, 1.0)  # a zero row: Σ = 0, any angle will do
        rho = np.clip(sig / safe, -1.0, 1.0)
        th = np.arccos(rho)
        if X1 is X2:  # x = x': θ = 0 exactly (arccos(1 − ε) would be √(2ε) off)
            th[np.diag_indices_from(th)] = 0.0
        sig = norm * (np.sin(th) + (np.pi - th) * np.cos(th)) / np.pi
        dot = (np.pi - th) / np.pi  # Σ(x, x) = ‖x‖² in every layer for ReLU
        theta_ntk = sig + theta_ntk * dot
    return theta_ntk


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """An empty user cache for every test (not created; ``XDG_CACHE_HOME`` too)."""
    d = tmp_path / "cache"
    monkeypatch.setenv("NTKHGM_CACHE_DIR", str(d))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return d
