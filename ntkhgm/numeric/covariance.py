"""Correlation coordinates of Λ = [[a, c], [c, b]], computed one way everywhere.

√(ab), ρ = c/√(ab), s = √(1 − ρ²) and θ = arccos ρ, with 1 − ρ² taken from
δ = ab − c² = (√(ab) − |c|)(√(ab) + |c|), which keeps full relative accuracy
near |ρ| = 1; Λ is degenerate exactly where √(ab) = 0 or δ = 0.
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


def correlation(a, b, c) -> Correlation:
    a, b, c = (np.asarray(x, dtype=float) for x in (a, b, c))
    root = np.sqrt(a * b)
    delta = np.maximum((root - np.abs(c)) * (root + np.abs(c)), 0.0)
    safe = np.where(root > 0, root, 1.0)
    rho = np.where(root > 0, np.clip(c / safe, -1.0, 1.0), 0.0)
    s = np.where(root > 0, np.sqrt(delta) / safe, 1.0)
    theta = np.where(root > 0, np.arctan2(np.sqrt(delta), c), 0.5 * np.pi)
    return Correlation(root, rho, s, theta, (root == 0) | (delta == 0))
