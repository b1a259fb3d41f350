"""Every file location ntkhgm reads or writes, in one place.

Two kinds of places:

- **shipped** (read-only package data, found through :mod:`importlib.resources`, so
  they work from a checkout, an editable install, a regular install and a wheel):
  the verified Pfaffian systems of the catalog (``ntkhgm/data/pfaffians/*.json``),
  the Risa/Asir driver script (``ntkhgm/asir_scripts/ntkhgm.rr``) and the example data
  (``ntkhgm/data/examples/``: links to the checkout's ``data/*.csv``, copied into
  the wheel); the catalog's systems in (√a, √b, ρ) coordinates
  (``ntkhgm/data/rho_systems/*.json.gz``, each checked against its Pfaffian on load).
  ``$NTKHGM_DATA_DIR`` replaces the shipped Pfaffian folder, e.g. to test an empty
  or a regenerated set.
- **user** (written by ntkhgm, atomically): the cache folder
  ``$NTKHGM_CACHE_DIR``, else ``$XDG_CACHE_HOME/ntkhgm`` (an absolute
  ``XDG_CACHE_HOME`` only, as the XDG specification asks), else
  ``~/.cache/ntkhgm``.  User activations' Pfaffians are ``<name>.json`` /
  ``<name>.derivative.json`` in it.  Nothing derived from a user's Pfaffian (the
  exact change of coordinates of docs/math.md §9) is stored: it is derived in
  memory, in about a second.

Nothing here creates a folder; writers create what they write into.
"""

from __future__ import annotations

import atexit
import os
from contextlib import ExitStack
from importlib import resources
from pathlib import Path

__all__ = ["user_cache_dir", "user_pfaffian_dir",
           "shipped_pfaffian_dir", "shipped_rho_dir", "asir_script", "example_data_dir",
           "ENV_VARS"]

#: Environment variables that choose a location (documented in the README's table).
ENV_VARS = ("NTKHGM_CACHE_DIR", "XDG_CACHE_HOME", "NTKHGM_DATA_DIR")

_PACKAGE = "ntkhgm"
_EXTRACTED = ExitStack()  # package data extracted from a zip, kept for the process
atexit.register(_EXTRACTED.close)
_RESOURCE_MEMO: dict[str, Path] = {}


def _env_path(name: str) -> Path | None:
    """``$name`` as an absolute path (``~`` expanded), or None when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    return Path(raw).expanduser().absolute()


def _package_path(relative: str) -> Path:
    """A file or folder of the installed package as a real path (extracted if zipped)."""
    hit = _RESOURCE_MEMO.get(relative)
    if hit is not None:
        return hit
    res = resources.files(_PACKAGE).joinpath(*relative.split("/"))
    path = res if isinstance(res, Path) else _EXTRACTED.enter_context(resources.as_file(res))
    _RESOURCE_MEMO[relative] = Path(path)
    return Path(path)


def user_cache_dir() -> Path:
    """The user cache folder (see the module docstring for the lookup order)."""
    env = _env_path("NTKHGM_CACHE_DIR")
    if env is not None:
        return env
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "ntkhgm"
    return Path.home() / ".cache" / "ntkhgm"


def user_pfaffian_dir() -> Path:
    """Where user activations' Pfaffian systems live: the cache folder itself."""
    return user_cache_dir()


def shipped_pfaffian_dir() -> Path:
    """The catalog's verified Pfaffian systems: ``$NTKHGM_DATA_DIR`` or package data."""
    env = _env_path("NTKHGM_DATA_DIR")
    if env is not None:
        return env
    return _package_path("data/pfaffians")


def shipped_rho_dir() -> Path:
    """The catalog's systems in (√a, √b, ρ) coordinates (docs/math.md §9), derived from
    the shipped Pfaffians and checked against them on load (:mod:`ntkhgm.numeric.rho_files`)."""
    return _package_path("data/rho_systems")


def example_data_dir() -> Path:
    """The example data shipped with the package (the diabetes split of ``data/``)."""
    return _package_path("data/examples")


def asir_script() -> Path:
    """The Risa/Asir driver ``ntkhgm.rr`` (loads asir-contrib's nk_restriction and yang)."""
    return _package_path("asir_scripts/ntkhgm.rr")
