"""ntkhgm: NTK and NNGP kernels for holonomic activations by the holonomic gradient method.

The public API is this thin facade over the private modules:

- :func:`dual` — dual activations E_{N(0,Λ)}[σ(u)σ(v)] (:mod:`ntkhgm.duals`)
- :func:`kernel` — NTK / NNGP matrices (:mod:`ntkhgm.kernels`)
- :class:`KernelRegressor` — kernel regression (:mod:`ntkhgm.regression`)
- :func:`get_activation`, :func:`list_activations` — the catalog
"""

from __future__ import annotations

from .activations import Activation, get_activation, list_activations
from .duals import available_methods, dual
from .kernels import kernel

__version__ = "0.1.0"

__all__ = [
    "Activation",
    "KernelRegressor",
    "available_methods",
    "dual",
    "get_activation",
    "kernel",
    "list_activations",
]


def __getattr__(name: str):
    # regression is written separately and imports kernels; load it lazily
    if name == "KernelRegressor":
        from .regression import KernelRegressor

        return KernelRegressor
    raise AttributeError(name)
