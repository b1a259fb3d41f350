"""The catalog's Pfaffian systems in (√a, √b, ρ) coordinates, shipped and checked on load.

:meth:`.pfaffian_ode.RhoSystem.from_pfaffian` (docs/math.md §9) needs sympy (a third
of a second to import) and up to a second per system (GELU′, rank 8); the catalog's
results ship as package data instead (``ntkhgm/data/rho_systems``, made by
``make rho-systems``), so that no catalog activation derives anything at run time.

File ``<activation>[.derivative].json.gz``: gzip (no timestamp) of the JSON object::

    {
      "schema": "ntkhgm.rho_system/1",
      "pfaffian": "…",      # rho_system_key of the Pfaffian it was derived from
      "system": {…},        # RhoSystem.to_dict(): rank, p, q, numerators, kappa, m1, m2, rest
      "sha256": "…"         # of the canonical JSON of the other keys (as Pfaffian files)
    }

Nothing read is trusted.  :func:`load_rho_system` caps the compressed and the
decompressed size, checks the hash, the types, shapes and bounds of every field,
that the file belongs to this Pfaffian (its key and its standard monomials), and then
that it *is* this Pfaffian's transform: at a random point (sa, sb, ρ) modulo a 61-bit
prime every entry of B = N/(κ(1−ρ)^m₁(1+ρ)^m₂Q̃) equals
sa^{p_j−p_i} sb^{q_j−q_i} (Σ ∂x_k/∂ρ · P_k(x(ρ)) + δ_ij ρ/(1−ρ²))_ij (docs/math.md §9,
eq. of B).  Both sides are rational functions of bounded degree, so a wrong system
passes with probability ≲ deg/2^61 < 1e-15 (Schwartz–Zippel).  A file that fails is not
used (the caller derives the system from the Pfaffian and warns).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import secrets
import zlib
from fractions import Fraction
from pathlib import Path

from ..algebra.pfaffian import MODULUS, PfaffianSystem, content_hash, matrices_modp
from ..errors import PfaffianFileError
from .pfaffian_ode import RhoSystem, rho_system_key

__all__ = ["SCHEMA", "rho_file_name", "load_rho_system", "rho_file_bytes", "write_rho_files"]

SCHEMA = "ntkhgm.rho_system/1"
MAX_COMPRESSED_BYTES = 4 * 1024 * 1024
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_TERMS = 200_000
MAX_EXPONENT = 128
MAX_COEFF_CHARS = 2_000
_KEYS = {"schema", "pfaffian", "system", "sha256"}
_SYSTEM_KEYS = {"rank", "p", "q", "numerators", "kappa", "m1", "m2", "rest"}


def rho_file_name(activation: str, derivative: bool) -> str:
    """The shipped file of an activation's (or its derivative's) system."""
    return f"{activation}{'.derivative' if derivative else ''}.json.gz"


def rho_file_bytes(rs: RhoSystem, system: PfaffianSystem) -> bytes:
    """The file content (deterministic: sorted keys, gzip without a timestamp)."""
    obj = {"schema": SCHEMA, "pfaffian": rho_system_key(system),
           "system": json.loads(rs.to_json())}
    obj["sha256"] = content_hash(obj)
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return gzip.compress(text.encode("ascii"), compresslevel=9, mtime=0)


def _read(path: Path) -> dict:
    """The JSON object of a file, within the size caps (a gzip bomb stops at the cap)."""
    if path.stat().st_size > MAX_COMPRESSED_BYTES:
        raise PfaffianFileError(f"{path}: file too large")
    raw = path.read_bytes()
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        text = d.decompress(raw, MAX_FILE_BYTES + 1)
    except zlib.error as exc:
        raise PfaffianFileError(f"{path}: not a gzip file ({exc})") from None
    if len(text) > MAX_FILE_BYTES or d.unconsumed_tail:
        raise PfaffianFileError(f"{path}: decompressed content too large")
    try:
        obj = json.loads(text.decode("ascii"))
    except (ValueError, RecursionError) as exc:
        raise PfaffianFileError(f"{path}: not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(obj, dict) or set(obj) != _KEYS or obj["schema"] != SCHEMA:
        raise PfaffianFileError(f"{path}: not a {SCHEMA} object")
    if content_hash(obj) != obj["sha256"]:
        raise PfaffianFileError(f"{path}: content hash mismatch (file corrupted or edited)")
    return obj


def _int(x, lo: int, hi: int, what: str) -> int:
    if type(x) is not int or not lo <= x <= hi:
        raise PfaffianFileError(f"{what} must be an integer in [{lo}, {hi}]")
    return x


# the form the writer uses (str of a Fraction), parsed without Fraction's general regex
_CANONICAL = re.compile(r"(-?[0-9]+)(?:/([0-9]+))?")


def _fraction(x, what: str) -> Fraction:
    if not isinstance(x, str) or not 0 < len(x) <= MAX_COEFF_CHARS:
        raise PfaffianFileError(f"{what}: coefficient must be a short string")
    canonical = _CANONICAL.fullmatch(x)
    try:
        if canonical:
            num, den = canonical.groups()
            return Fraction(int(num), int(den)) if den else Fraction(int(num))
        return Fraction(x)
    except (ValueError, ZeroDivisionError):
        raise PfaffianFileError(f"{what}: {x[:40]!r} is not a rational number") from None


def _terms(ts, what: str, budget: list[int]) -> tuple[tuple[int, int, int, Fraction], ...]:
    if not isinstance(ts, list):
        raise PfaffianFileError(f"{what} must be a list of terms")
    budget[0] -= len(ts)
    if budget[0] < 0:
        raise PfaffianFileError(f"more than {MAX_TERMS} terms")
    out = []
    for t in ts:
        if not isinstance(t, list) or len(t) != 4:
            raise PfaffianFileError(f"{what}: a term is [e_sa, e_sb, e_rho, coefficient]")
        e = [_int(v, 0, MAX_EXPONENT, f"{what}: exponent") for v in t[:3]]
        out.append((e[0], e[1], e[2], _fraction(t[3], what)))
    return tuple(out)


def _system(d, system: PfaffianSystem) -> RhoSystem:
    """A RhoSystem from the file's ``system`` object, every field checked against the Pfaffian."""
    if not isinstance(d, dict) or set(d) != _SYSTEM_KEYS:
        raise PfaffianFileError("'system' has the wrong keys")
    r = system.rank
    p = [2 * i + j for i, j, k in system.std_monomials]
    q = [2 * k + j for i, j, k in system.std_monomials]
    if d["rank"] != r or d["p"] != p or d["q"] != q:
        raise PfaffianFileError("rank or standard monomials differ from the Pfaffian's")
    rows = d["numerators"]
    if not isinstance(rows, list) or len(rows) != r or any(
            not isinstance(row, list) or len(row) != r for row in rows):
        raise PfaffianFileError(f"'numerators' must be a {r}×{r} array")
    budget = [MAX_TERMS]
    numerators = tuple(tuple(_terms(e, f"numerators[{i}][{j}]", budget)
                             for j, e in enumerate(row)) for i, row in enumerate(rows))
    kappa = _fraction(d["kappa"], "kappa")
    if kappa == 0:
        raise PfaffianFileError("kappa must not be 0")
    return RhoSystem(rank=r, p=tuple(p), q=tuple(q), numerators=numerators, kappa=kappa,
                     m1=_int(d["m1"], 0, 16, "m1"), m2=_int(d["m2"], 0, 16, "m2"),
                     rest=_terms(d["rest"], "rest", budget))


def _modp(cf: Fraction) -> int:
    if cf.denominator % MODULUS == 0:      # only a forged file can have one
        raise PfaffianFileError(f"coefficient {str(cf)[:40]} has no value modulo the prime")
    return cf.numerator % MODULUS * pow(cf.denominator % MODULUS, -1, MODULUS) % MODULUS


def _poly_modp(terms, pw) -> int:
    return sum(_modp(cf) * pw[0][e1] * pw[1][e2] * pw[2][e3]
               for e1, e2, e3, cf in terms) % MODULUS


def transform_defect_modp(rs: RhoSystem, system: PfaffianSystem) -> str:
    """'' if rs is the Pfaffian's (√a, √b, ρ) transform at a random point modulo a prime,
    else the first entry that differs (module docstring)."""
    P = MODULUS
    for _attempt in range(8):
        sa, sb, rho = (secrets.randbelow(P - 3) + 2 for _ in range(3))
        w = (1 - rho * rho) % P
        if w == 0:
            continue
        inv = {v: pow(v, -1, P) for v in (sa, sb)}
        iw = pow(w, -1, P)
        half = pow(2, -1, P)
        x = (-half * inv[sa] ** 2 * iw % P, rho * half * inv[sa] * inv[sb] * iw % P,
             -half * inv[sb] ** 2 * iw % P)
        mats = matrices_modp(system, x)
        pw = [[pow(v, e, P) for e in range(MAX_EXPONENT + 1)] for v in (sa, sb, rho)]
        den = (_modp(rs.kappa) * pow(1 - rho, rs.m1, P) * pow(1 + rho, rs.m2, P)
               * _poly_modp(rs.rest, pw)) % P
        if mats is None or den == 0:
            continue
        iw2 = iw * iw % P
        dx = {"x11": -rho * inv[sa] ** 2 * iw2,
              "x12": (1 + rho * rho) * half * inv[sa] * inv[sb] * iw2,
              "x22": -rho * inv[sb] ** 2 * iw2}
        iden = pow(den, -1, P)
        for i in range(rs.rank):
            for j in range(rs.rank):
                b = sum(dx[k] * mats[k][i][j] for k in dx) + (rho * iw if i == j else 0)
                b = b * pow(sa, rs.p[j] - rs.p[i], P) * pow(sb, rs.q[j] - rs.q[i], P) % P
                if (_poly_modp(rs.numerators[i][j], pw) * iden - b) % P:
                    return f"entry [{i}][{j}] is not the Pfaffian's"
        return ""
    return "denominators vanish at every test point"


def load_rho_system(system: PfaffianSystem, directory: Path) -> RhoSystem | None:
    """The shipped transform of ``system`` from ``directory``, checked (module docstring).

    None when no file is there or the file was made from another Pfaffian (a regenerated
    one, ``$NTKHGM_DATA_DIR``); PfaffianFileError when a file claims to be this
    Pfaffian's and fails a check."""
    if not isinstance(system, PfaffianSystem):     # a system built in memory: derive it
        return None
    path = directory / rho_file_name(system.activation, system.derivative)
    if not path.is_file():
        return None
    obj = _read(path)
    if obj["pfaffian"] != rho_system_key(system):
        return None
    try:
        rs = _system(obj["system"], system)
    except PfaffianFileError as exc:
        raise PfaffianFileError(f"{path}: {exc}") from None
    try:
        defect = transform_defect_modp(rs, system)
    except PfaffianFileError as exc:
        raise PfaffianFileError(f"{path}: {exc}") from None
    if defect:
        raise PfaffianFileError(f"{path}: {defect}")
    return rs


def write_rho_files(systems: list[PfaffianSystem], directory: Path) -> list[Path]:
    """Derive and write the transform of every system (``make rho-systems``)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for system in systems:
        path = directory / rho_file_name(system.activation, system.derivative)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(rho_file_bytes(RhoSystem.from_pfaffian(system), system))
        os.replace(tmp, path)
        written.append(path)
    return written


def main() -> None:
    """Write the transforms of every shipped Pfaffian into the package's data folder."""
    from ..algebra.cache import load_file
    from ..paths import shipped_pfaffian_dir, shipped_rho_dir

    systems = [load_file(p) for p in sorted(shipped_pfaffian_dir().glob("*.json"))]
    for path in write_rho_files(systems, shipped_rho_dir()):
        print(path)


if __name__ == "__main__":
    main()
