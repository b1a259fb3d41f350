"""The Singular backend (docs/math.md §4): ``dmodapp.lib`` restriction, Gröbner basis, Pfaffian.

Singular runs as a subprocess on a pseudo-terminal (one long-lived session per
backend object).  Steps:

1. In the Weyl algebra Q⟨x11,x12,x22,y1,y2,∂…⟩ build the Koyama–Takemura ideal
   from the annihilator's normal form (u^a ∂u^b ↦ ∂y1^a T1^b, and the same in v).
2. ``restrictionIdeal(I, w)``, w = 1 on y1, y2 (default slimgb engine), the ring's
   variables ordered x11, x12, x22, y1, y2: 15× faster than y's first for GELU'.
3. ``slimgb`` of the restriction ideal in Q⟨x11,x12,x22,∂11,∂12,∂22⟩ under a
   matrix order comparing ∂-monomials first (degree reverse lexicographic with
   ∂11 > ∂22 > ∂12), then x-monomials: a Gröbner basis in the rational Weyl algebra.
4. In Python (:mod:`ntkhgm.algebra.weyl`): standard monomials and Pfaffian matrices.

The Singular executable is found through env ``NTKHGM_SINGULAR``, then the
``passagemath-singular`` wheel (``sage_wheels/bin/Singular``), then PATH.
"""

from __future__ import annotations

import os
import re
import shutil
import sysconfig
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from ...errors import BackendCrashError, BackendError, BackendNotFoundError
from ..annihilator import Annihilator
from ..expr import ExprLimits, parse_polynomial
from ..weyl import DVARS, XVARS, frac_to_pair, from_sparse, pfaffian_from_basis
from .base import Backend, BackendResult, CASSession

__all__ = ["SingularBackend", "find_singular"]

_CAS_VARS = XVARS + DVARS
_CAS_LIMITS = ExprLimits(max_length=20_000_000, max_degree=200, max_terms=200_000,
                         max_digits=5000, max_coeff_bits=200_000, max_work=10**9)

# ∂-first matrix order on (x11,x12,x22,dx11,dx12,dx22): ∂-degree, −∂12, −∂22, x-degree, −x22, −x12
_ORDER = ("M(0,0,0,1,1,1, 0,0,0,0,-1,0, 0,0,0,0,0,-1, "
          "1,1,1,0,0,0, 0,0,-1,0,0,0, 0,-1,0,0,0,0)")


def _wheel_singular() -> Path | None:
    candidates = []
    for key in ("purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            candidates.append(Path(p) / "sage_wheels" / "bin" / "Singular")
    try:  # the wheel may live elsewhere on sys.path (user site, venv)
        import importlib.util

        spec = importlib.util.find_spec("sage_wheels")
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                candidates.append(Path(loc) / "bin" / "Singular")
    except (ImportError, ValueError):
        pass
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    return None


def find_singular() -> str | None:
    """Locate Singular: ``NTKHGM_SINGULAR``, the passagemath wheel, then PATH."""
    env = os.environ.get("NTKHGM_SINGULAR")
    if env:
        p = Path(env)
        return str(p) if p.is_file() and os.access(p, os.X_OK) else None
    w = _wheel_singular()
    if w is not None:
        return str(w)
    return shutil.which("Singular")


def _singular_error(out: str) -> str | None:
    lines = [m.group(1).strip() for m in re.finditer(r"^[\s>]*\?(.*)$", out, re.M)]
    if lines:
        return " ".join(lines[:4])
    return None


def _coeff_text(c: Fraction) -> str:
    return str(c.numerator) if c.denominator == 1 else f"({c.numerator}/{c.denominator})"


def kt_operator_lines(ann: Annihilator, target: str, dy: str, t: str) -> list[str]:
    """Singular lines building Σ c·dy^a·T^b (docs/math.md §4) from the normal form only."""
    lines = [f"{target} = 0;"]
    for a, b, c in ann.terms:
        factors = [_coeff_text(c)]
        if a:
            factors.append(f"{dy}^{a}")
        if b:
            factors.append(f"{t}^{b}")
        lines.append(f"{target} = {target} + {'*'.join(factors)};")
    return lines


class SingularBackend(Backend):
    """Pfaffian systems with Singular's dmodapp.lib (docs/math.md §4)."""

    name = "singular"

    def __init__(self, executable: str | None = None, timeout: float | None = None):
        exe = executable or find_singular()
        if exe is None:
            raise BackendNotFoundError(
                "Singular not found; install it with `pip install --no-deps "
                "passagemath-singular` or set NTKHGM_SINGULAR")
        self.executable = exe
        self._timeout = timeout
        self._session: CASSession | None = None
        self._version: str | None = None
        self._job = 0

    # -- session -----------------------------------------------------------------
    @classmethod
    def locate(cls) -> str | None:
        return find_singular()

    def session(self) -> CASSession:
        if self._session is None or not self._session.alive():
            env = dict(os.environ)
            env.setdefault("TERM", "dumb")
            self._session = CASSession(
                "Singular", [self.executable, "-q", "-t", "--no-rc", "--no-warn"],
                env=env, timeout=self._timeout, error_detector=_singular_error,
                marker=lambda m: f'print("{m}");',
                startup='LIB "dmodapp.lib";', interrupt_texts=("// ** Interrupt at",))
        return self._session

    def version(self) -> str:
        if self._version is None:
            out = self.session().run('print(string(system("version")));')
            m = re.search(r"\b(\d)(\d)(\d)(\d*)\b", out)
            self._version = (f"Singular {m.group(1)}.{m.group(2)}.{m.group(3)} "
                             f"({m.group(0)})") if m else "Singular (unknown version)"
        return self._version

    def close(self) -> None:
        if self._session is not None:
            self._session.close("quit;")
            self._session = None

    # -- computation -------------------------------------------------------------
    def groebner_basis(self, ann: Annihilator,
                       progress: Callable[[str, float], None] | None = None,
                       ) -> tuple[list[dict], dict[str, float]]:
        """Restriction ideal and its ∂-first Gröbner basis, as sparse polynomials."""
        s = self.session()
        self._job += 1
        p = f"ntk{self._job}"
        timings: dict[str, float] = {}
        lines = [
            # x's before y's: the (−w, w) Gröbner basis breaks ties by dp in this order;
            # with y's first it took 50 s of CPU for GELU', with x's first 3 s
            f"ring {p}r0 = 0,(x11,x12,x22,y1,y2,dx11,dx12,dx22,dy1,dy2),dp;",
            f"def {p}W0 = Weyl(); setring {p}W0;",
            f"poly {p}T1 = -(y1 + 2*x11*dy1 + 2*x12*dy2);",
            f"poly {p}T2 = -(y2 + 2*x12*dy1 + 2*x22*dy2);",
            f"poly {p}L1; poly {p}L2;",
            *kt_operator_lines(ann, f"{p}L1", "dy1", f"{p}T1"),
            *kt_operator_lines(ann, f"{p}L2", "dy2", f"{p}T2"),
            f"ideal {p}I = {p}L1, {p}L2, dx11-dy1^2, dx22-dy2^2, dx12-2*dy1*dy2;",
        ]
        s.run("\n".join(lines))
        t0 = time.perf_counter()
        s.run(f"def {p}R = restrictionIdeal({p}I, intvec(0,0,0,1,1)); setring {p}R;"
              f" int {p}n = size(resIdeal); print({p}n);")
        timings["restriction"] = time.perf_counter() - t0
        if progress:
            progress("restriction", timings["restriction"])
        t0 = time.perf_counter()
        out = s.run("\n".join([
            f"ring {p}r2 = 0,(x11,x12,x22,dx11,dx12,dx22),{_ORDER};",
            f"def {p}W2 = Weyl(); setring {p}W2;",
            f"ideal {p}G = slimgb(imap({p}R, resIdeal));",
            'print("@@BEGIN@@");',
            f"int {p}i; for ({p}i = 1; {p}i <= size({p}G); {p}i++) "
            f"{{ print(string({p}G[{p}i])); }}",
            'print("@@END@@");',
            f"kill {p}r0; kill {p}R;",
        ]))
        timings["groebner"] = time.perf_counter() - t0
        if progress:
            progress("groebner", timings["groebner"])
        m = re.search(r"@@BEGIN@@(.*)@@END@@", out, re.S)
        if m is None:
            raise BackendCrashError("Singular: could not read the Gröbner basis from its output "
                                    f"(tail: {CASSession._tail(out)})")
        polys = []
        for line in m.group(1).splitlines():
            line = line.strip().lstrip(">").strip()
            if not line:
                continue
            polys.append(parse_polynomial(line, _CAS_VARS, limits=_CAS_LIMITS,
                                          error=BackendCrashError, what="Singular output"))
        if not polys:
            raise BackendError("Singular returned an empty Gröbner basis")
        return polys, timings

    def pfaffian(self, annihilator: Annihilator,
                 progress: Callable[[str, float], None] | None = None) -> BackendResult:
        polys, timings = self.groebner_basis(annihilator, progress)
        t0 = time.perf_counter()
        std, mats = pfaffian_from_basis([from_sparse(g) for g in polys])
        matrices = {k: [[frac_to_pair(c) for c in row] for row in rows]
                    for k, rows in mats.items()}
        timings["pfaffian"] = time.perf_counter() - t0
        if progress:
            progress("pfaffian", timings["pfaffian"])
        return BackendResult(std_monomials=[tuple(m) for m in std], matrices=matrices,
                             timings=timings)
