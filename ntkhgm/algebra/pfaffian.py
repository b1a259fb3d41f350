"""Pfaffian systems ∂ij F = Pij F (docs/math.md §4) and their JSON file format.

A :class:`PfaffianSystem` holds exact matrices of rational functions in
x11, x12, x22 for F = (s1•Ê, …, sr•Ê)ᵀ, where sℓ = ∂11^i ∂12^j ∂22^k are the
standard monomials (the first one is 1, so F[0] = Ê).  The initial values follow
docs/math.md §5: on x12 = 0, s•Ê(x11, 0, x22) = 2^j M_{2i+j}(x11) M_{2k+j}(x22) with
M_n(t) = ∫ uⁿ f(u) e^{t u²} du (f = σ, or σ' for ``derivative``).

JSON schema ``ntkhgm.pfaffian/1`` (all keys required, no others)::

    {
      "schema": "ntkhgm.pfaffian/1",
      "activation": "relu",               # catalog or user name
      "derivative": false,                 # true: the system of f = σ'
      "function": "sigma",                 # "sigma" | "dsigma" (redundant with derivative)
      "annihilator": "u*du-1",             # normal form of the annihilator of f
      "variables": ["x11", "x12", "x22"],
      "std_monomials": [[0,0,0], [0,1,0]],  # [i,j,k] = ∂11^i ∂12^j ∂22^k
      "rank": 2,
      "matrices": {"x11": [["(-1)/(x11)", …], …], "x12": …, "x22": …},
                                           # entry [a][b]: exact rational function text
                                           # (grammar of ntkhgm.algebra.expr); ∂_key F = P F
      "initial_values": {"at": "x12 = 0", "formula": …, "moment": …,
                         "terms": [[2^j, 2i+j, 2k+j], …]},   # one per std monomial
      "backend": {"name": "singular", "version": "Singular 4.4.1 (44105)"},
      "timings": {"restriction": 3.2, …},  # seconds
      "sha256": "…",                       # of the canonical JSON of all other keys
      "expression": "(u*step(u))"          # optional: f as a safe expression (user
                                           # activations; grammar of ntkhgm.algebra.sigma_expr)
    }

The canonical JSON is ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
ensure_ascii=True)`` of the object without its ``sha256`` key.  Loading
(:meth:`PfaffianSystem.from_json`) checks every key, the hash, the shapes, parses
each entry with the restricted parser (never eval), and checks the integrability
condition exactly modulo a prime at a random point; any failure raises
:class:`~ntkhgm.errors.PfaffianFileError`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from ..activations import ACTIVATION_NAME as _NAME
from ..errors import AnnihilatorSyntaxError, NtkhgmError, PfaffianFileError
from .annihilator import parse_annihilator
from .expr import ExprLimits, format_polynomial, parse_rational

__all__ = ["Monomial", "Poly", "RationalFunction", "PfaffianSystem", "SCHEMA",
           "MATRIX_KEYS", "integrability_defect_modp", "check_integrability_exact",
           "compile_matrices", "initial_value_terms", "MODULUS", "matrices_modp"]

SCHEMA = "ntkhgm.pfaffian/1"
VARIABLES = ("x11", "x12", "x22")
MATRIX_KEYS = VARIABLES
MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_RANK = 64
_ENTRY_LIMITS = ExprLimits(max_length=2_000_000, max_depth=32, max_exponent=64,
                           max_digits=400, max_degree=96, max_terms=20_000,
                           max_coeff_bits=8_000, max_work=400_000)
_KEYS = {"schema", "activation", "derivative", "function", "annihilator", "variables",
         "std_monomials", "rank", "matrices", "initial_values", "backend", "timings",
         "sha256"}
_OPTIONAL_KEYS = {"expression"}

Monomial = tuple[int, int, int]            # exponents of x11, x12, x22
Poly = dict[Monomial, Fraction]            # sparse polynomial, exact


@dataclass(frozen=True)
class RationalFunction:
    """num/den, exact sparse polynomials in x11, x12, x22."""

    num: Poly
    den: Poly

    def __hash__(self) -> int:
        return hash((frozenset(self.num.items()), frozenset(self.den.items())))

    def text(self) -> str:
        """Canonical text: ``num`` when den = 1, else ``(num)/(den)``."""
        n = format_polynomial(self.num, VARIABLES)
        if self.den == {(0, 0, 0): Fraction(1)}:
            return n
        return f"({n})/({format_polynomial(self.den, VARIABLES)})"

    @classmethod
    def parse(cls, text: str, what: str = "entry") -> RationalFunction:
        num, den = parse_rational(text, VARIABLES, limits=_ENTRY_LIMITS,
                                  error=PfaffianFileError, what=what)
        return cls({m: Fraction(c) for m, c in num.items()},
                   {m: Fraction(c) for m, c in den.items()})

    def __call__(self, x11: float, x12: float, x22: float) -> float:
        return _eval_poly(self.num, x11, x12, x22) / _eval_poly(self.den, x11, x12, x22)


def _eval_poly(p: Poly, x11, x12, x22):
    return sum(float(c) * x11 ** m[0] * x12 ** m[1] * x22 ** m[2] for m, c in p.items())


def initial_value_terms(std: tuple[Monomial, ...]) -> list[list[int]]:
    """[2^j, 2i+j, 2k+j] per standard monomial (docs/math.md §5)."""
    return [[2 ** j, 2 * i + j, 2 * k + j] for i, j, k in std]


def _canonical(obj: dict) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def content_hash(obj: dict) -> str:
    """sha256 of the canonical JSON of ``obj`` without its ``sha256`` key."""
    body = {k: v for k, v in obj.items() if k != "sha256"}
    return hashlib.sha256(_canonical(body).encode("ascii")).hexdigest()


@dataclass(frozen=True)
class PfaffianSystem:
    """∂_key F = matrices[key] · F for key in x11, x12, x22 (docs/math.md §4, §5)."""

    activation: str
    derivative: bool            # True: the system of the dual of σ'
    annihilator: str            # normal-form text of the annihilator of f (σ or σ')
    std_monomials: tuple[tuple[int, int, int], ...]   # (i, j, k); first is (0,0,0)
    matrices: dict[str, tuple[tuple[RationalFunction, ...], ...]]
    backend: str = ""
    backend_version: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    expression: str | None = None   # f as a safe expression (user activations), or None

    def function(self):
        """f (σ or σ') as a vectorised numpy function from ``expression``, or None."""
        if self.expression is None:
            return None
        from .sigma_expr import parse_sigma

        return parse_sigma(self.expression)

    def __hash__(self) -> int:
        return hash((self.activation, self.derivative, self.annihilator, self.std_monomials,
                     tuple((k, self.matrices[k]) for k in sorted(self.matrices))))

    @property
    def rank(self) -> int:
        """Holonomic rank r = number of standard monomials."""
        return len(self.std_monomials)

    @property
    def key(self) -> str:
        """File stem: ``relu`` or ``relu.derivative``."""
        return self.activation + (".derivative" if self.derivative else "")

    def initial_value_terms(self) -> list[list[int]]:
        """[2^j, 2i+j, 2k+j] per standard monomial (docs/math.md §5)."""
        return initial_value_terms(self.std_monomials)

    def to_dict(self) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "schema": SCHEMA,
            "activation": self.activation,
            "derivative": bool(self.derivative),
            "function": "dsigma" if self.derivative else "sigma",
            "annihilator": self.annihilator,
            "variables": list(VARIABLES),
            "std_monomials": [list(m) for m in self.std_monomials],
            "rank": self.rank,
            "matrices": {k: [[e.text() for e in row] for row in self.matrices[k]]
                         for k in MATRIX_KEYS},
            "initial_values": {
                "at": "x12 = 0",
                "formula": "s*E(x11,0,x22) = c * M_n1(x11) * M_n2(x22) for s = d11^i d12^j d22^k,"
                           " [c, n1, n2] = [2^j, 2i+j, 2k+j]",
                "moment": "M_n(t) = integral of u^n f(u) exp(t u^2) du over the real line, "
                          "f = " + ("sigma'" if self.derivative else "sigma"),
                "terms": self.initial_value_terms(),
            },
            "backend": {"name": self.backend, "version": self.backend_version},
            "timings": {k: round(float(v), 4) for k, v in sorted(self.timings.items())},
        }
        if self.expression is not None:
            obj["expression"] = self.expression
        obj["sha256"] = content_hash(obj)
        return obj

    def to_json(self) -> str:
        """The JSON text (schema ``ntkhgm.pfaffian/1``, with content hash)."""
        return json.dumps(self.to_dict(), indent=1, sort_keys=True, ensure_ascii=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, *, source: str = "Pfaffian file",
                  check_integrability: bool = True) -> PfaffianSystem:
        """Parse and validate a Pfaffian file; raise PfaffianFileError on any defect."""
        if isinstance(text, bytes):
            if len(text) > MAX_FILE_BYTES:
                raise PfaffianFileError(f"{source}: file too large")
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise PfaffianFileError(f"{source}: not UTF-8 text") from None
        if len(text) > MAX_FILE_BYTES:
            raise PfaffianFileError(f"{source}: file too large")
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise PfaffianFileError(f"{source}: not valid JSON ({exc})") from None
        return cls.from_dict(obj, source=source, check_integrability=check_integrability)

    @classmethod
    def from_dict(cls, obj: Any, *, source: str = "Pfaffian file",
                  check_integrability: bool = True) -> PfaffianSystem:
        def bad(msg: str) -> PfaffianFileError:
            return PfaffianFileError(f"{source}: {msg}")

        if not isinstance(obj, dict):
            raise bad("top level is not a JSON object")
        if obj.get("schema") != SCHEMA:
            raise bad(f"unknown schema {str(obj.get('schema'))[:40]!r} (expected {SCHEMA!r})")
        keys = set(obj)
        if not _KEYS <= keys <= _KEYS | _OPTIONAL_KEYS:
            missing, extra = sorted(_KEYS - keys), sorted(keys - _KEYS - _OPTIONAL_KEYS)
            raise bad(f"wrong keys (missing {missing}, unexpected {extra[:5]})")
        digest = obj["sha256"]
        if not isinstance(digest, str) or content_hash(obj) != digest:
            raise bad("content hash mismatch (file corrupted or edited)")
        name = obj["activation"]
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise bad("invalid activation name")
        deriv = obj["derivative"]
        if not isinstance(deriv, bool):
            raise bad("'derivative' must be true or false")
        if obj["function"] != ("dsigma" if deriv else "sigma"):
            raise bad("'function' does not match 'derivative'")
        ann_text = obj["annihilator"]
        try:
            ann = parse_annihilator(ann_text)
        except AnnihilatorSyntaxError as exc:
            raise bad(f"bad annihilator: {exc}") from None
        if ann.text() != ann_text:
            raise bad("annihilator is not in normal form")
        if obj["variables"] != list(VARIABLES):
            raise bad(f"variables must be {list(VARIABLES)}")
        std_raw = obj["std_monomials"]
        if not isinstance(std_raw, list) or not 1 <= len(std_raw) <= MAX_RANK:
            raise bad(f"std_monomials must be a list of 1..{MAX_RANK} entries")
        std: list[Monomial] = []
        for m in std_raw:
            if not (isinstance(m, list) and len(m) == 3 and
                    all(type(e) is int and 0 <= e <= 64 for e in m)):
                raise bad("each standard monomial must be [i, j, k] with small integers >= 0")
            std.append((m[0], m[1], m[2]))
        if len(set(std)) != len(std):
            raise bad("repeated standard monomial")
        if std[0] != (0, 0, 0):
            raise bad("the first standard monomial must be [0, 0, 0]")
        r = len(std)
        if obj["rank"] != r or type(obj["rank"]) is not int:
            raise bad("'rank' does not match the number of standard monomials")
        mats_raw = obj["matrices"]
        if not isinstance(mats_raw, dict) or set(mats_raw) != set(MATRIX_KEYS):
            raise bad(f"'matrices' must have exactly the keys {list(MATRIX_KEYS)}")
        mats: dict[str, tuple[tuple[RationalFunction, ...], ...]] = {}
        for k in MATRIX_KEYS:
            rows = mats_raw[k]
            if not (isinstance(rows, list) and len(rows) == r and
                    all(isinstance(row, list) and len(row) == r for row in rows)):
                raise bad(f"matrix {k} must be {r}x{r}")
            out_rows = []
            for a, row in enumerate(rows):
                out_row = []
                for b, e in enumerate(row):
                    if not isinstance(e, str):
                        raise bad(f"matrix {k}[{a}][{b}] is not a string")
                    out_row.append(RationalFunction.parse(e, what=f"{source}: {k}[{a}][{b}]"))
                out_rows.append(tuple(out_row))
            mats[k] = tuple(out_rows)
        iv = obj["initial_values"]
        if not isinstance(iv, dict) or iv.get("terms") != initial_value_terms(tuple(std)):
            raise bad("initial_values do not match the standard monomials")
        be = obj["backend"]
        if not (isinstance(be, dict) and set(be) == {"name", "version"} and
                all(isinstance(v, str) and len(v) < 200 for v in be.values())):
            raise bad("'backend' must be {\"name\": str, \"version\": str}")
        tm = obj["timings"]
        if not (isinstance(tm, dict) and len(tm) < 50 and
                all(isinstance(k, str) and isinstance(v, (int, float)) and not
                    isinstance(v, bool) for k, v in tm.items())):
            raise bad("'timings' must map names to seconds")
        expression = obj.get("expression")
        if expression is not None:
            from .sigma_expr import parse_sigma

            if not isinstance(expression, str):
                raise bad("'expression' must be a string")
            try:
                parsed = parse_sigma(expression)
            except NtkhgmError as exc:
                raise bad(f"bad expression: {exc}") from None
            if parsed.text != expression:
                raise bad("'expression' is not in canonical form")
        system = cls(activation=name, derivative=deriv, annihilator=ann_text,
                     std_monomials=tuple(std), matrices=mats, backend=be["name"],
                     backend_version=be["version"],
                     timings={k: float(v) for k, v in tm.items()}, expression=expression)
        if check_integrability:
            defect = integrability_defect_modp(system)
            if defect:
                raise bad(f"the system is not integrable ({defect})")
        return system


# -- integrability -------------------------------------------------------------------

_P = (1 << 61) - 1  # a Mersenne prime
MODULUS = _P


def _modp_poly(p: Poly, pw: list[list[int]]) -> tuple[int, list[int]]:
    """Value and the three partial derivatives of p at a point (powers pw), modulo _P."""
    val, d = 0, [0, 0, 0]
    for (a, b, c), coef in p.items():
        cm = coef.numerator % _P * pow(coef.denominator % _P, -1, _P) % _P
        val += cm * pw[0][a] * pw[1][b] * pw[2][c]
        if a:
            d[0] += cm * a * pw[0][a - 1] * pw[1][b] * pw[2][c]
        if b:
            d[1] += cm * b * pw[0][a] * pw[1][b - 1] * pw[2][c]
        if c:
            d[2] += cm * c * pw[0][a] * pw[1][b] * pw[2][c - 1]
    return val % _P, [x % _P for x in d]


def _modp_value(p: Poly, pw: list[list[int]]) -> int:
    """Value of p at a point (powers pw), modulo _P."""
    return sum(c.numerator % _P * pow(c.denominator % _P, -1, _P) * pw[0][a] * pw[1][b] * pw[2][k]
               for (a, b, k), c in p.items()) % _P


def matrices_modp(system: PfaffianSystem,
                  x: tuple[int, int, int]) -> dict[str, list[list[int]]] | None:
    """The matrices P_x11, P_x12, P_x22 at the point x modulo :data:`MODULUS`; None where a
    denominator vanishes there (exact arithmetic: used to cross-check derived systems)."""
    pw = [[pow(v, e, _P) for e in range(_ENTRY_LIMITS.max_degree + 2)] for v in x]
    out: dict[str, list[list[int]]] = {}
    for k in MATRIX_KEYS:
        out[k] = []
        for row in system.matrices[k]:
            vrow = []
            for e in row:
                den = _modp_value(e.den, pw)
                if den == 0:
                    return None
                vrow.append(_modp_value(e.num, pw) * pow(den, -1, _P) % _P)
            out[k].append(vrow)
    return out


def integrability_defect_modp(system: PfaffianSystem, tries: int = 2) -> str:
    """Exact integrability test modulo a 61-bit prime at random points ('' when it holds).

    Checks ∂k Pl − ∂l Pk + Pl Pk − Pk Pl = 0 (docs/math.md §4) at ``tries`` points
    chosen at random; a non-integrable system passes with probability ≲ deg/2^61.
    """
    r = system.rank
    for _ in range(tries):
        for _attempt in range(5):
            pt = tuple(secrets.randbelow(_P - 2) + 1 for _ in range(3))
            pw = [[pow(x, e, _P) for e in range(_ENTRY_LIMITS.max_degree + 2)] for x in pt]
            vals: dict[str, list[list[int]]] = {}
            ders: dict[str, list[list[list[int]]]] = {}
            ok = True
            for k in MATRIX_KEYS:
                vals[k], ders[k] = [], []
                for row in system.matrices[k]:
                    vrow, drow = [], []
                    for e in row:
                        nv, nd = _modp_poly(e.num, pw)
                        dv, dd = _modp_poly(e.den, pw)
                        if dv == 0:
                            ok = False
                            break
                        inv = pow(dv, -1, _P)
                        vrow.append(nv * inv % _P)
                        inv2 = inv * inv % _P
                        drow.append([(nd[i] * dv - nv * dd[i]) % _P * inv2 % _P
                                     for i in range(3)])
                    if not ok:
                        break
                    vals[k].append(vrow)
                    ders[k].append(drow)
                if not ok:
                    break
            if ok:
                break
        else:
            return "denominators vanish at every test point"
        for ik, k in enumerate(MATRIX_KEYS):
            for il, ell in enumerate(MATRIX_KEYS):
                if il <= ik:
                    continue
                Pk, Pl = vals[k], vals[ell]
                for a in range(r):
                    for b in range(r):
                        s = ders[ell][a][b][ik] - ders[k][a][b][il]
                        s += sum(Pl[a][c] * Pk[c][b] - Pk[a][c] * Pl[c][b] for c in range(r))
                        if s % _P:
                            return f"condition for ({k}, {ell}) fails at entry [{a}][{b}]"
    return ""


def check_integrability_exact(system: PfaffianSystem) -> list[str]:
    """Symbolic check of ∂k Pl − ∂l Pk + Pl Pk − Pk Pl = 0 with sympy (docs/math.md §4).

    Exact polynomial arithmetic (sympy ``PolyRing`` over QQ): each entry of the
    condition is a sum of fractions n/d; fractions with the same (monic)
    denominator are added first, then the groups are brought to their least
    common multiple and the numerator is tested for zero.  Returns the failing
    entries; empty when the system is integrable.
    """
    from sympy import QQ
    from sympy.polys.rings import ring

    R, *gens = ring(",".join(VARIABLES), QQ)

    def conv(p: Poly):
        return R.from_dict({m: QQ(c.numerator, c.denominator) for m, c in p.items()})

    def monic(n, d):
        lc = d.LC
        return (n.quo_ground(lc), d.quo_ground(lc)) if lc != 1 else (n, d)

    ents = {k: [[monic(conv(e.num), conv(e.den)) for e in row] for row in system.matrices[k]]
            for k in MATRIX_KEYS}
    r = system.rank
    fails = []

    def add(groups, n, d, sign=1):
        if not n:
            return
        n, d = monic(n, d)
        groups[d] = groups.get(d, R.zero) + (n if sign > 0 else -n)

    for ik, k in enumerate(MATRIX_KEYS):
        for il, ell in enumerate(MATRIX_KEYS):
            if il <= ik:
                continue
            for a in range(r):
                for b in range(r):
                    groups: dict = {}
                    n, d = ents[ell][a][b]
                    add(groups, n.diff(gens[ik]) * d - n * d.diff(gens[ik]), d * d)
                    n, d = ents[k][a][b]
                    add(groups, n.diff(gens[il]) * d - n * d.diff(gens[il]), d * d, -1)
                    for c in range(r):
                        (n1, d1), (n2, d2) = ents[ell][a][c], ents[k][c][b]
                        add(groups, n1 * n2, d1 * d2)
                        (n1, d1), (n2, d2) = ents[k][a][c], ents[ell][c][b]
                        add(groups, n1 * n2, d1 * d2, -1)
                    groups = {d: n for d, n in groups.items() if n}
                    if not groups:
                        continue
                    lcm = R.one
                    for d in groups:
                        lcm = lcm.lcm(d)
                    total = R.zero
                    for d, n in groups.items():
                        q, rem = lcm.div(d)
                        total += n * q
                    if total:
                        fails.append(f"({k}, {ell}) entry [{a}][{b}]")
    return fails


# -- fast numeric evaluation -----------------------------------------------------------

def compile_matrices(system: PfaffianSystem):
    """Vectorised evaluator: f(x11, x12, x22) -> {key: array (..., r, r)} (float64).

    All numerators and denominators are evaluated as one matrix product over the
    distinct monomials; nothing is generated as code.
    """
    r = system.rank
    monos: dict[Monomial, int] = {}
    polys: list[Poly] = []
    for k in MATRIX_KEYS:
        for row in system.matrices[k]:
            for e in row:
                polys.append(e.num)
                polys.append(e.den)
    for p in polys:
        for m in p:
            monos.setdefault(m, len(monos))
    C = np.zeros((len(polys), len(monos)))
    for i, p in enumerate(polys):
        for m, c in p.items():
            C[i, monos[m]] = float(c)
    E = np.array(list(monos), dtype=int).reshape(-1, 3)
    maxdeg = int(E.max(initial=0))

    def evaluate(x11, x12, x22) -> dict[str, np.ndarray]:
        x11, x12, x22 = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in (x11, x12, x22)))
        shape = x11.shape
        pw = [np.stack([np.ones_like(v) if e == 0 else v ** e for e in range(maxdeg + 1)])
              for v in (x11.ravel(), x12.ravel(), x22.ravel())]
        V = pw[0][E[:, 0]] * pw[1][E[:, 1]] * pw[2][E[:, 2]]     # (n_monos, npts)
        vals = C @ V                                             # (n_polys, npts)
        q = vals[0::2] / vals[1::2]                              # (3*r*r, npts)
        q = q.reshape(3, r, r, -1)
        return {k: np.moveaxis(q[i], -1, 0).reshape(shape + (r, r))
                for i, k in enumerate(MATRIX_KEYS)}

    return evaluate
