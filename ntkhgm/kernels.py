"""NNGP and NTK of deep fully connected networks (docs/math.md §1).

Conventions:

``arora`` (default; seed eqs. 3–7, Arora et al. 2019)
    Σ0 = x·x',  Σh = cσ D_σ(Λh),  Σ̇h = cσ D_σ'(Λh),  Θ0 = Σ0,  Θh = Σh + Θ_{h−1} Σ̇h;
    NNGP = Σ_L, NTK = Θ_L.  W_std and b_std do not apply.
``nt``
    neural-tangents' ``stax.serial(*[Dense(W, b), Act()]*L, Dense(W, b))`` in the
    'ntk' parameterization: nngp = W²x·x'/d0 + b², ntk = nngp, then per layer
    nngp ← W² T + b², ntk ← W²(ntk Ṫ + T) + b² with T = D_σ(Λ), Ṫ = D_σ'(Λ).

Each layer evaluates the dual activations once on the pairs that need them: the
upper triangle of K(X, X), all of K(X1, X2), and the per-point variances (the
diagonal, a 1-D integral).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .activations import Activation
from .duals import as_activation, c_sigma, dual, resolve_method
from .errors import InputError
from .numeric.covariance import sqrt_product

KINDS = ("ntk", "nngp")
CONVENTIONS = ("arora", "nt")


def _check_inputs(X1, X2, depth, kind, convention, W_std, b_std):
    X1 = np.atleast_2d(np.asarray(X1, dtype=float))
    X2 = None if X2 is None else np.atleast_2d(np.asarray(X2, dtype=float))
    if X1.ndim != 2 or X1.shape[0] == 0 or X1.shape[1] == 0:
        raise InputError(f"X1 must be a non-empty 2-D array, got shape {X1.shape}")
    if X2 is not None and (X2.ndim != 2 or X2.shape[1] != X1.shape[1] or X2.shape[0] == 0):
        raise InputError(f"X2 must be a non-empty 2-D array with {X1.shape[1]} columns, "
                         f"got shape {X2.shape}")
    for name, X in (("X1", X1), ("X2", X2)):
        if X is not None and not np.all(np.isfinite(X)):
            raise InputError(f"{name} contains NaN or infinite values")
    if int(depth) != depth or depth < 0:
        raise InputError(f"depth must be a non-negative integer, got {depth!r}")
    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}")
    if convention not in CONVENTIONS:
        raise InputError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    if convention == "arora" and (W_std != 1.0 or b_std != 0.0):
        raise InputError("W_std and b_std apply to convention 'nt' only")
    if not (abs(W_std) <= 1e150 and abs(b_std) <= 1e150):  # squares must stay finite
        raise InputError("W_std and b_std must be finite with |value| ≤ 1e150")
    return X1, X2


def _layer_duals(act: Activation, diag1, diag2, cross, symmetric: bool, *,
                 need_derivative: bool, method: str, options: dict):
    """D_σ and D_σ' on the cross matrix and D_σ on the diagonals of one layer."""
    n1, n2 = cross.shape
    if symmetric:
        iu = np.triu_indices(n1, k=1)
        a, b, c = diag1[iu[0]], diag1[iu[1]], cross[iu]
    else:
        a = np.broadcast_to(diag1[:, None], cross.shape).ravel()
        b = np.broadcast_to(diag2[None, :], cross.shape).ravel()
        c = cross.ravel()
    # clamp the rounding of earlier layers into the valid cone
    root = sqrt_product(a, b)  # not np.sqrt(a * b): a·b under/overflows for tiny/huge rows
    c = np.clip(c, -root, root)

    def evaluate(derivative, aa, bb, cc):
        name = resolve_method(act, derivative, method, npoints=aa.size)
        return dual(act, aa, bb, cc, derivative=derivative, method=name, **options)

    def assemble(values, diag_values):
        if symmetric:
            out = np.empty((n1, n1))
            out[iu] = values
            out.T[iu] = values
            out[np.diag_indices(n1)] = diag_values
            return out
        return values.reshape(n1, n2)

    diag_all = np.concatenate([diag1, diag2]) if diag2 is not None else diag1
    self_T = evaluate(False, diag_all, diag_all, diag_all)
    T = assemble(evaluate(False, a, b, c), self_T[:n1])
    Td = None
    if need_derivative:
        self_Td = evaluate(True, diag1, diag1, diag1) if symmetric else None
        Td = assemble(evaluate(True, a, b, c), self_Td)
    new_d1 = self_T[:n1]
    new_d2 = self_T[n1:] if diag2 is not None else None
    return T, Td, new_d1, new_d2


def kernel(X1, X2=None, *, activation: str | Activation, depth: int, kind: str = "ntk",
           convention: str = "arora", W_std: float = 1.0, b_std: float = 0.0,
           method: str = "auto", progress: Callable[[int, int], None] | None = None,
           **options) -> np.ndarray:
    """NTK or NNGP matrix K(X1, X2) (K(X1, X1) when X2 is None), docs/math.md §1.

    ``method`` chooses the dual-activation method (see :mod:`ntkhgm.duals`);
    ``options`` are passed to it (e.g. ``degree`` for ``gh``).
    """
    X1, X2 = _check_inputs(X1, X2, depth, kind, convention, W_std, b_std)
    act = as_activation(activation)
    symmetric = X2 is None
    Y = X1 if symmetric else X2
    d0 = X1.shape[1]
    w2, b2 = float(W_std) ** 2, float(b_std) ** 2

    if convention == "arora":
        cs = c_sigma(act)
        cross = X1 @ Y.T
        diag1 = np.einsum("ij,ij->i", X1, X1)
        diag2 = None if symmetric else np.einsum("ij,ij->i", Y, Y)
    else:
        cs = 1.0
        cross = w2 * (X1 @ Y.T) / d0 + b2
        diag1 = w2 * np.einsum("ij,ij->i", X1, X1) / d0 + b2
        diag2 = None if symmetric else w2 * np.einsum("ij,ij->i", Y, Y) / d0 + b2
    if symmetric:
        cross = 0.5 * (cross + cross.T)
        cross[np.diag_indices_from(cross)] = diag1
    ntk = cross.copy()
    need_derivative = kind == "ntk"
    for layer in range(int(depth)):
        if progress is not None:
            progress(layer, int(depth))
        d2 = diag1 if symmetric else diag2
        T, Td, t1, t2 = _layer_duals(act, diag1, d2 if not symmetric else None, cross,
                                     symmetric, need_derivative=need_derivative,
                                     method=method, options=options)
        if convention == "arora":
            cross, diag1 = cs * T, cs * t1
            diag2 = None if symmetric else cs * t2
            if need_derivative:
                ntk = cross + ntk * (cs * Td)
        else:
            cross, diag1 = w2 * T + b2, w2 * t1 + b2
            diag2 = None if symmetric else w2 * t2 + b2
            if need_derivative:
                ntk = w2 * (ntk * Td + T) + b2
    if progress is not None:
        progress(int(depth), int(depth))
    return ntk if kind == "ntk" else cross
