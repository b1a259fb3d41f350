"""Shared references for the algebra tests: math.md §4's ReLU Pfaffian, written out by hand."""

from __future__ import annotations

import os

import sympy

from ntkhgm.algebra.pfaffian import PfaffianSystem, RationalFunction

X11, X12, X22 = sympy.symbols("x11 x12 x22")


def to_sympy(e: RationalFunction):
    def poly(p):
        return sum(sympy.Rational(c.numerator, c.denominator) * X11 ** m[0] * X12 ** m[1]
                   * X22 ** m[2] for m, c in p.items())
    return poly(e.num) / poly(e.den)


def relu_reference():
    """math.md §4, basis (1, ∂12)."""
    d = X12 ** 2 - X11 * X22
    p11 = [[-1 / X11, -X12 / (2 * X11)],
           [2 * X12 / (X11 * d), (2 * X12 ** 2 + 3 * X11 * X22) / (2 * X11 * d)]]
    p12 = [[0, 1], [-4 / d, -5 * X12 / d]]
    p22 = [[-1 / X22, -X12 / (2 * X22)],
           [2 * X12 / (X22 * d), (2 * X12 ** 2 + 3 * X11 * X22) / (2 * X22 * d)]]
    return {"x11": p11, "x12": p12, "x22": p22}


def assert_matches_relu_reference(system: PfaffianSystem) -> None:
    assert system.std_monomials == ((0, 0, 0), (0, 1, 0))
    ref = relu_reference()
    for k in ("x11", "x12", "x22"):
        for a in range(2):
            for b in range(2):
                assert sympy.cancel(to_sympy(system.matrices[k][a][b]) - ref[k][a][b]) == 0, \
                    (k, a, b)


def pid_dead(pid: int) -> bool:
    """True when the process is gone or a zombie (for CAS session tests)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] == "Z"
    except FileNotFoundError:
        return True


def closing_backend(backend):
    """Fixture body: yield the backend, then close it and check its CAS process is gone."""
    yield backend
    pid = backend._session.pid if backend._session else None
    backend.close()
    if pid:
        assert pid_dead(pid)
