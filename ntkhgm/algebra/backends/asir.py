"""The Risa/Asir backend (docs/math.md §4): nk_restriction + yang via ``asir_scripts/ntkhgm.rr``.

Risa/Asir runs as one long-lived subprocess (``asir -quiet``) on a pseudo-terminal
with ``ctrl("no_debug_on_error",1)`` so that an error never drops into the
``(debug)`` prompt; the session always ends with ``quit;`` and the process group
is killed afterwards (Asir spins at 100% CPU when its input ends without
``quit``).  Errors are recognised by Asir's ``return to toplevel`` / ``(debug)``
and reported with Asir's own text.

Steps: ``ntkhgm_setup`` (Koyama–Takemura ideal, ``nk_restriction.restriction_ideal``,
``yang.buchberger``), then ntkhgm picks as basis the standard monomials of its own
∂-order (degree reverse lexicographic, ∂11 > ∂22 > ∂12 — the same basis as the
Singular backend, e.g. (1, ∂12) for ReLU, which avoids the apparent singularity
x12 = 0 of yang's default basis): monomials in increasing order whose normal
forms are independent, tested exactly modulo a prime at a random point.  Finally
``yang.pfaffian`` in that basis.

Asir is found through env ``NTKHGM_ASIR``, then PATH; asir-contrib through
``ASIR_CONTRIB_DIR`` or ``OpenXM_HOME`` (``$OpenXM_HOME/lib/asir-contrib``); Asir's own
library (``glib``) through ``ASIR_LIBDIR``, ``$OpenXM_HOME/lib/asir`` or ``../lib/asir``
beside the executable (:func:`find_libdir`).  The driver script is package data
(:func:`ntkhgm.paths.asir_script`).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from ...errors import BackendCrashError, BackendError, BackendNotFoundError
from ...paths import asir_script
from ..annihilator import Annihilator
from ..expr import ExprLimits, parse_rational
from ..weyl import XVARS, dkey, normalize_pair
from .base import Backend, BackendResult, CASSession

__all__ = ["AsirBackend", "find_asir", "find_contrib", "find_libdir"]

_LIMITS = ExprLimits(max_length=20_000_000, max_degree=200, max_terms=200_000,
                     max_digits=5000, max_coeff_bits=200_000, max_work=10**8)
_P = (1 << 61) - 1


def find_asir() -> str | None:
    """Locate the asir executable: ``NTKHGM_ASIR``, then PATH."""
    env = os.environ.get("NTKHGM_ASIR")
    if env:
        p = Path(env)
        return str(p) if p.is_file() and os.access(p, os.X_OK) else None
    return shutil.which("asir")


def find_contrib() -> Path | None:
    """The asir-contrib directory holding nk_restriction.rr and yang.rr, or None."""
    cands = []
    if os.environ.get("ASIR_CONTRIB_DIR"):
        cands.append(Path(os.environ["ASIR_CONTRIB_DIR"]))
    if os.environ.get("OpenXM_HOME"):
        cands.append(Path(os.environ["OpenXM_HOME"]) / "lib" / "asir-contrib")
    for c in cands:
        if (c / "nk_restriction.rr").is_file() and (c / "yang.rr").is_file():
            return c
    return None


def find_libdir(executable: str | None = None) -> Path | None:
    """Asir's own library folder (holding ``glib``): ``ASIR_LIBDIR``, then
    ``$OpenXM_HOME/lib/asir``, then ``../lib/asir`` next to the executable; None if none.

    Asir looks there for its start-up files; without it ``load`` fails with
    ``"glib" not found`` (e.g. an OpenXM_HOME set up for asir-contrib only).
    """
    cands = []
    for var, tail in (("ASIR_LIBDIR", ()), ("OpenXM_HOME", ("lib", "asir"))):
        if os.environ.get(var):
            cands.append(Path(os.environ[var]).joinpath(*tail))
    if executable:
        cands.append(Path(executable).resolve().parent.parent / "lib" / "asir")
    for c in cands:
        if (c / "glib").is_file():
            return c
    return None


def _asir_error(out: str) -> str | None:
    if "return to toplevel" in out or "(debug)" in out or \
            re.search(r"^\s*(syntax error|parse error)", out, re.M):
        lines = [ln.strip() for ln in out.splitlines()
                 if ln.strip() and not ln.strip().startswith("@@")
                 and not ln.strip().startswith("--")]
        text = " ".join(lines)[-400:]
        return text or "unknown error"
    return None


def _coeff(c: Fraction) -> str:
    return str(c.numerator) if c.denominator == 1 else f"({c.numerator})/({c.denominator})"


def _mono_text(m: tuple[int, int, int]) -> str:
    parts = [f"dx{v}^{e}" for v, e in zip(("11", "12", "22"), m, strict=False) if e]
    return "*".join(parts) if parts else "1"


def _asir_list(items: list[str], per_line: int = 8) -> str:
    """An Asir list literal split over lines (a pty line holds at most 4095 bytes)."""
    chunks = [",".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
    return "[" + ",\n".join(chunks) + "]"


def _modp_eval(p: dict, pt) -> int:
    s = 0
    for (a, b, c), coef in p.items():
        coef = Fraction(coef)
        s += (coef.numerator % _P) * pow(coef.denominator % _P, -1, _P) * \
            pow(pt[0], a, _P) * pow(pt[1], b, _P) * pow(pt[2], c, _P)
    return s % _P


class AsirBackend(Backend):
    """Pfaffian systems with Risa/Asir + asir-contrib (the user's design card)."""

    name = "asir"

    def __init__(self, executable: str | None = None, timeout: float | None = None):
        exe = executable or find_asir()
        if exe is None:
            raise BackendNotFoundError("Risa/Asir not found; set NTKHGM_ASIR or put `asir` on "
                                       "PATH (and OpenXM_HOME for asir-contrib)")
        if find_contrib() is None:
            raise BackendNotFoundError("asir-contrib (nk_restriction.rr, yang.rr) not found; "
                                       "set OpenXM_HOME or ASIR_CONTRIB_DIR")
        self.executable = exe
        self._timeout = timeout
        self._session: CASSession | None = None
        self._version: str | None = None

    @classmethod
    def locate(cls) -> str | None:
        exe = find_asir()
        return exe if exe is not None and find_contrib() is not None else None

    def session(self) -> CASSession:
        if self._session is None or not self._session.alive():
            env = dict(os.environ)
            env.setdefault("TERM", "dumb")
            contrib = find_contrib()
            if "OpenXM_HOME" not in env and contrib is not None:
                env["ASIR_CONTRIB_DIR"] = str(contrib)
            libdir = find_libdir(self.executable)
            if libdir is not None:
                env["ASIR_LIBDIR"] = str(libdir)
            script = str(asir_script()).replace('"', "")
            self._session = CASSession(
                "Risa/Asir", [self.executable, "-quiet"], env=env, timeout=self._timeout,
                error_detector=_asir_error, marker=lambda m: f'print("{m}")$',
                startup=f'ctrl("no_debug_on_error",1)$\nload("{script}")$',
                interrupt_texts=("interrupt ?(",))
        return self._session

    def version(self) -> str:
        if self._version is None:
            out = self.session().run('print("@@V "+rtostr(version()))$')
            m = re.search(r"@@V (\d+)", out)
            self._version = f"Risa/Asir {m.group(1)}" if m else "Risa/Asir (unknown version)"
        return self._version

    def close(self) -> None:
        if self._session is not None:
            self._session.close("quit;")
            self._session = None

    def _entries(self, out: str, tag: str, what: str) -> dict[tuple[int, ...], tuple]:
        res = {}
        for m in re.finditer(rf"^@@{tag} ((?:\d+ )+)(.+?)\s*$", out, re.M):
            idx = tuple(int(x) for x in m.group(1).split())
            num, den = parse_rational(m.group(2), XVARS, limits=_LIMITS,
                                      error=BackendCrashError, what=what)
            res[idx] = (num, den)
        return res

    def pfaffian(self, annihilator: Annihilator,
                 progress: Callable[[str, float], None] | None = None) -> BackendResult:
        s = self.session()
        terms = _asir_list([f"[{_coeff(c)},{a},{b}]" for a, b, c in annihilator.terms])
        out = s.run(f"ntkhgm_setup({terms})$")
        timings = {k: float(v) for k, v in re.findall(r"@@TIME (\w+) ([\d.e+-]+)", out)}
        m = re.search(r"@@RANK (\d+)", out)
        if m is None:
            raise BackendCrashError(f"Risa/Asir: no rank in its output ({CASSession._tail(out)})")
        rank = int(m.group(1))
        if rank == 0:
            raise BackendError("Risa/Asir: the restriction ideal is the whole ring (rank 0)")
        if progress:
            progress("restriction", timings.get("restriction", 0.0))
            progress("groebner", timings.get("groebner", 0.0))
        basis = self._choose_basis(s, rank)
        out = s.run(f"ntkhgm_pfaffian({_asir_list([_mono_text(b) for b in basis])})$")
        timings.update({k: float(v) for k, v in re.findall(r"@@TIME (\w+) ([\d.e+-]+)", out)})
        ents = self._entries(out, "E", "Risa/Asir output")
        mats = {}
        for k, key in enumerate(XVARS):
            rows = []
            for a in range(rank):
                row = []
                for b in range(rank):
                    if (k, a, b) not in ents:
                        raise BackendCrashError(f"Risa/Asir: matrix entry {key}[{a}][{b}] missing")
                    num, den = ents[(k, a, b)]
                    n, d = normalize_pair({m: Fraction(c) for m, c in num.items()},
                                          {m: Fraction(c) for m, c in den.items()})
                    row.append((n, d))
                rows.append(row)
            mats[key] = rows
        if progress:
            progress("pfaffian", timings.get("pfaffian", 0.0))
        return BackendResult(std_monomials=list(basis), matrices=mats, timings=timings)

    def _choose_basis(self, s: CASSession, rank: int) -> list[tuple[int, int, int]]:
        """Standard monomials of ntkhgm's ∂-order: the greedy independent monomials."""
        pt = tuple(secrets.randbelow(_P - 2) + 1 for _ in range(3))
        basis: list[tuple[int, int, int]] = []
        rows: list[list[int]] = []      # reduced rows (echelon form mod p)
        pivots: list[int] = []
        for deg in range(0, 4 * rank + 2):
            cands = sorted(((i, j, deg - i - j) for i in range(deg + 1)
                            for j in range(deg + 1 - i)), key=dkey)
            out = s.run(f"ntkhgm_coords({_asir_list([_mono_text(c) for c in cands])})$")
            ents = self._entries(out, "C", "Risa/Asir output")
            added = False
            for ci, c in enumerate(cands):
                vec = []
                for col in range(rank):
                    if (ci, col) not in ents:
                        raise BackendCrashError("Risa/Asir: normal-form coordinates missing")
                    num, den = ents[(ci, col)]
                    dv = _modp_eval(den, pt)
                    if dv == 0:
                        raise BackendError("Risa/Asir: unlucky evaluation point; retry")
                    vec.append(_modp_eval(num, pt) * pow(dv, -1, _P) % _P)
                for row, pc in zip(rows, pivots, strict=False):
                    if vec[pc]:
                        f = vec[pc]
                        vec = [(x - f * y) % _P for x, y in zip(vec, row, strict=False)]
                nz = next((i for i, x in enumerate(vec) if x), None)
                if nz is not None:
                    inv = pow(vec[nz], -1, _P)
                    rows.append([x * inv % _P for x in vec])
                    pivots.append(nz)
                    basis.append(c)
                    added = True
                    if len(basis) == rank:
                        return basis
            if not added:
                break
        raise BackendError(f"Risa/Asir: could not find {rank} independent monomials")
