"""High-precision references for dual activations (mpmath), independent of ntkhgm's numerics.

E[f(u) f(v)] with u = √a z, v = √b(ρ z + s w), z, w ~ N(0, 1): the inner
expectation over w has a closed form for every activation used here (for a
Heaviside factor via the complex error function), the outer one is an
mpmath.quad split at the kink z = 0.  Degenerate Λ is a 1-D integral.

The values the tests ask for are kept in ``data/mpmath_reference.json`` (as scipy keeps
mpmath values for its special functions): mpmath's own output, 22 digits, keyed by the
exact floats asked for; a value not there is computed.  test_mpmath_reference.py recomputes
a sample of the table with mpmath at every run.  To add the values of new test points::

    NTKHGM_RECORD_MPMATH=1 python -m pytest -n auto tests/...   # writes data/*.part.json
    python tests/mpmath_reference.py merge                      # folds them into the table
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

import mpmath as mp

mp.mp.dps = 25
_I = mp.mpc(0, 1)


def _trig_half_line(m, s, kind):
    """E_w[Y(m + s w) e^{i(m + s w)}] = e^{im} e^{−s²/2} ½ erfc((−m/s − i s)/√2)."""
    if s == 0:
        return mp.expjpi(m / mp.pi) if m > 0 else mp.mpc(0)
    val = mp.exp(_I * m) * mp.exp(-s * s / 2) * mp.erfc((-m / s - _I * s) / mp.sqrt(2)) / 2
    return val


# each activation: (pointwise f, inner E_w[f(m + s w)])
def _resin_inner(m, s):
    return mp.im(_trig_half_line(m, s, "sin"))


def _dresin_inner(m, s):
    return mp.re(_trig_half_line(m, s, "cos"))


def _gelu_inner(m, s):
    t = mp.sqrt(1 + s * s)
    return m * mp.ncdf(m / t) + s * s / t * mp.npdf(m / t)


def _dgelu_inner(m, s):
    t = mp.sqrt(1 + s * s)
    return mp.ncdf(m / t) + mp.npdf(m / t) / t * m / (1 + s * s)


ACTIVATIONS = {
    ("resin", False): (lambda x: mp.sin(x) if x > 0 else mp.mpf(0), _resin_inner),
    ("resin", True): (lambda x: mp.cos(x) if x > 0 else mp.mpf(0), _dresin_inner),
    ("gelu", False): (lambda x: x * mp.ncdf(x), _gelu_inner),
    ("gelu", True): (lambda x: mp.ncdf(x) + x * mp.npdf(x), _dgelu_inner),
}


TABLE = Path(__file__).with_name("data") / "mpmath_reference.json"
DIGITS = 22
RECORD = os.environ.get("NTKHGM_RECORD_MPMATH") == "1"


def key(name: str, derivative: bool, a: float, b: float, c: float) -> str:
    """The table's key: the activation and the exact floats (hex) of a, b, c."""
    return "|".join([name, str(int(bool(derivative))),
                     float(a).hex(), float(b).hex(), float(c).hex()])


def load_table(path: Path = TABLE) -> dict[str, str]:
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    if data.get("dps") != mp.mp.dps or not isinstance(data.get("values"), dict):
        raise ValueError(f"{path}: not a table of mpmath values at dps {mp.mp.dps}")
    return data["values"]


_TABLE = load_table()
_RECORDED: dict[str, str] = {}


def _write_recorded() -> None:
    if _RECORDED:
        part = TABLE.with_name(f"mpmath_reference.{os.getpid()}.part.json")
        part.write_text(json.dumps(_RECORDED, sort_keys=True))


if RECORD:
    atexit.register(_write_recorded)


def dual(name: str, derivative: bool, a: float, b: float, c: float) -> mp.mpf:
    """E_{N(0,Λ)}[f(u) f(v)], Λ = [[a, c], [c, b]], to ~20 digits: from the table of
    mpmath's values where it holds them (module docstring), else :func:`compute_dual`."""
    k = key(name, derivative, a, b, c)
    if k in _TABLE:
        return mp.mpf(_TABLE[k])
    value = compute_dual(name, derivative, a, b, c)
    if RECORD:
        _RECORDED[k] = mp.nstr(value, DIGITS)
    return value


def compute_dual(name: str, derivative: bool, a: float, b: float, c: float) -> mp.mpf:
    """E_{N(0,Λ)}[f(u) f(v)], Λ = [[a, c], [c, b]], to ~20 digits, by mpmath.quad."""
    f, inner = ACTIVATIONS[name, derivative]
    a, b, c = mp.mpf(a), mp.mpf(b), mp.mpf(c)
    sa, sb = mp.sqrt(a), mp.sqrt(b)
    if sa == 0 or sb == 0:
        return f(mp.mpf(0)) * mp.quad(lambda z: f((sa + sb) * z) * mp.npdf(z),
                                      [-mp.inf, 0, mp.inf])
    rho = c / (sa * sb)
    s = mp.sqrt(max((1 - rho) * (1 + rho), 0))
    if s == 0:
        return mp.quad(lambda z: f(sa * z) * f(mp.sign(rho) * sb * z) * mp.npdf(z),
                       [-mp.inf, 0, mp.inf])
    return mp.quad(lambda z: f(sa * z) * inner(sb * rho * z, sb * s) * mp.npdf(z),
                   [-mp.inf, -1, 0, 1, mp.inf])


def second_moment(name: str, derivative: bool, a: float) -> mp.mpf:
    """E_{z~N(0,a)}[f(z)²], the Cauchy–Schwarz scale."""
    return dual(name, derivative, a, a, a)


def merge() -> None:
    """Fold the recorded parts (data/*.part.json) into the table and remove them."""
    values = load_table()
    parts = sorted(TABLE.parent.glob("mpmath_reference.*.part.json"))
    for part in parts:
        values.update(json.loads(part.read_text()))
    TABLE.write_text(json.dumps({"dps": mp.mp.dps, "digits": DIGITS,
                                 "generator": "tests/mpmath_reference.py (compute_dual)",
                                 "values": dict(sorted(values.items()))}, indent=0) + "\n")
    for part in parts:
        part.unlink()
    print(f"{TABLE}: {len(values)} values ({len(parts)} parts merged)")


if __name__ == "__main__":
    if sys.argv[1:] != ["merge"]:
        sys.exit("usage: python tests/mpmath_reference.py merge")
    merge()
