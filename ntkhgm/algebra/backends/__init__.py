"""CAS backends producing Pfaffian systems (docs/math.md §4): Risa/Asir and Singular."""

from __future__ import annotations

from ...errors import BackendNotFoundError, InputError
from .base import Backend, BackendResult, CASSession

__all__ = ["Backend", "BackendResult", "CASSession", "get_backend", "available_backends",
           "BACKENDS"]

BACKENDS = ("asir", "singular")


def _classes():
    from .asir import AsirBackend
    from .singular import SingularBackend

    return {"asir": AsirBackend, "singular": SingularBackend}


def available_backends() -> list[str]:
    """Names of the backends whose CAS is installed, preferred first."""
    return [n for n, cls in _classes().items() if cls.available()]


def get_backend(name: str = "auto", **kwargs) -> Backend:
    """A backend instance: ``asir``, ``singular`` or ``auto`` (Asir when present, else Singular)."""
    classes = _classes()
    if name == "auto":
        avail = available_backends()
        if not avail:
            raise BackendNotFoundError(
                "no computer algebra system found: install Singular "
                "(`pip install --no-deps passagemath-singular`) or Risa/Asir "
                "(set NTKHGM_ASIR and OpenXM_HOME)")
        name = avail[0]
    if name not in classes:
        raise InputError(f"unknown backend {name!r}; choose auto, asir or singular")
    return classes[name](**kwargs)
