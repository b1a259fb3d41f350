"""Registers every command module on the ``main`` group (one import line each)."""

# ruff: noqa: I001

from __future__ import annotations

from . import kernel_cmds  # noqa: F401
from . import pfaffian_cmd  # noqa: F401
from . import bench_cmd  # noqa: F401
