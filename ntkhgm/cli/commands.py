"""Registers every command module on the ``main`` group."""

from __future__ import annotations
