"""Shared fixtures: the repository root on sys.path, data files, a CLI runner."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run the checkout even when ntkhgm is not installed
    sys.path.insert(0, str(ROOT))

DATA = ROOT / "data"


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
