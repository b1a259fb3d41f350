"""Correlation coordinates of Λ = [[a, c], [c, b]], computed one way everywhere.

√(ab), ρ = c/√(ab), s = √(1 − ρ²) and θ = arccos ρ, with 1 − ρ² taken from
(1 − |ρ|)(1 + |ρ|) and 1 − |ρ| = (√(ab) − |c|)/√(ab), which keeps full relative
accuracy near |ρ| = 1; Λ is degenerate exactly where √(ab) = 0 or |c| = √(ab).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Correlation(NamedTuple):
    root: np.ndarray        # √(ab)
    rho: np.ndarray         # c/√(ab) in [−1, 1] (0 where √(ab) = 0)
    s: np.ndarray           # √(1 − ρ²)
    theta: np.ndarray       # arccos ρ ∈ [0, π]
    degenerate: np.ndarray  # √(ab) = 0 or c² = ab


def sqrt_product(a, b) -> np.ndarray:
    """√(ab) for a, b ≥ 0 anywhere in the double range, as accurate as √(fl(ab)).

    a·b itself under- or overflows for a, b ≲ 1e-154 or ≳ 1e154 (rows with |x| ≲ 1e-81
    or ≳ 1e77); the mantissas are multiplied instead and the power of two is halved
    exactly.  √a·√b would round twice: √(ab) must be exactly a when a = b, or
    1 − ρ near ρ = 1 loses all its digits.
    """
    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    with np.errstate(under="ignore", over="ignore"):
        ab = a * b
    # where a·b is a normal number, √(fl(ab)) is the value below bit for bit (scaling by
    # powers of two commutes with rounding); only the rest goes through frexp/ldexp
    normal = (ab >= 4 * np.finfo(float).tiny) & (ab <= np.finfo(float).max)
    if np.all(normal):
        return np.sqrt(ab)
    out = np.asarray(np.sqrt(np.where(normal, ab, 1.0)))
    rest = ~normal
    out[rest] = _sqrt_product_scaled(a[rest], b[rest])
    return out[()] if out.ndim == 0 else out


def _sqrt_product_scaled(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    ma, ea = np.frexp(a)
    mb, eb = np.frexp(b)
    e = ea + eb
    odd = (e % 2) != 0
    m = ma * mb * np.where(odd, 2.0, 1.0)          # exact: a power-of-two factor
    with np.errstate(invalid="ignore"):
        return np.ldexp(np.sqrt(m), (e - odd) // 2)


def correlation(a, b, c, root=None) -> Correlation:
    """The coordinates of the module docstring, for a, b from 0 up to the double range.

    √(ab) comes from :func:`sqrt_product` (or ``root``, its value if the caller has it)
    and 1 − ρ² as ((√(ab) − |c|)/√(ab))·(1 + |c|/√(ab)), so
    nothing overflows for a, b near 1e308 or underflows for a, b near 1e-300 (a·b
    itself would; issue 13).
    """
    a, b, c = (np.asarray(x, dtype=float) for x in (a, b, c))
    root = sqrt_product(a, b) if root is None else root
    positive = root > 0
    if positive.all():
        # the usual case, the same operations without the masks (the same values)
        ratio = c / root
        minus = np.maximum(root - np.abs(c), 0.0) / root
        s = np.sqrt(minus)
        s *= np.sqrt(1.0 + np.minimum(np.abs(ratio), 1.0))
        return Correlation(root, np.clip(ratio, -1.0, 1.0), s, np.arctan2(s, ratio),
                           minus == 0)
    safe = np.where(positive, root, 1.0)
    ratio = c / safe
    minus = np.maximum(root - np.abs(c), 0.0) / safe     # 1 − |ρ|, relatively accurate
    rho = np.where(positive, np.clip(ratio, -1.0, 1.0), 0.0)
    s = np.where(positive, np.sqrt(minus) * np.sqrt(1.0 + np.minimum(np.abs(ratio), 1.0)), 1.0)
    theta = np.where(positive, np.arctan2(s, ratio), 0.5 * np.pi)
    return Correlation(root, rho, s, theta, ~positive | (minus == 0))
