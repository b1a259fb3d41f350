"""A restricted, safe parser for polynomial and rational-function text.

Used for every piece of text that ntkhgm turns into mathematics: the rational
function entries of a Pfaffian file (docs/math.md §4; variables x11, x12, x22) and
the polynomials a computer algebra system prints (variables x11, …, dx22).

The grammar is deliberately tiny::

    expr   := term (('+' | '-') term)*
    term   := unary (('*' | '/') unary)*
    unary  := ('+' | '-') unary | power
    power  := atom ('^' INTEGER)?
    atom   := INTEGER | VARIABLE | '(' expr ')'

Nothing is ever passed to ``eval``/``exec``/``sympify``.  Every resource is
bounded: text length, nesting depth, exponents, digits of a literal, total
degree, number of terms, coefficient size and the total multiplication work, so
an expression designed to be slow (``(x11+x12+x22+1)^99``) is refused quickly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from ..errors import NtkhgmError, PfaffianFileError

Coeff = int | Fraction
SparsePoly = dict[tuple[int, ...], Coeff]

__all__ = [
    "ExprLimits", "parse_polynomial", "parse_rational", "format_polynomial",
    "poly_mul", "poly_add", "poly_scale",
]


@dataclass(frozen=True)
class ExprLimits:
    """Resource limits of one parse (all inclusive)."""

    max_length: int = 2_000_000
    max_depth: int = 64
    max_exponent: int = 64
    max_digits: int = 400
    max_degree: int = 128
    max_terms: int = 20_000
    max_coeff_bits: int = 40_000
    max_work: int = 500_000  # total term-by-term products in one parse


DEFAULT_LIMITS = ExprLimits()

_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|(.))", re.S)


class _Parser:
    def __init__(self, text: str, variables: tuple[str, ...], rational: bool,
                 limits: ExprLimits, error: type[NtkhgmError], what: str):
        self.error, self.what, self.limits = error, what, limits
        if not isinstance(text, str):
            raise error(f"{what}: expected a string, got {type(text).__name__}")
        if len(text) > limits.max_length:
            raise error(f"{what}: expression too long ({len(text)} > {limits.max_length} "
                        "characters)")
        if not text.isascii():
            pos = next(i for i, ch in enumerate(text) if ord(ch) > 127)
            raise error(f"{what}: non-ASCII character {text[pos]!r} at position {pos}")
        self.text = text
        self.vars = {v: i for i, v in enumerate(variables)}
        self.nvars = len(variables)
        self.rational = rational
        self.work = 0
        self.toks: list[tuple[str, str, int]] = []
        for m in _TOKEN.finditer(text):
            if m.group(1) is not None:
                if len(m.group(1)) > limits.max_digits:
                    raise error(f"{what}: number with more than {limits.max_digits} digits "
                                f"at position {m.start(1)}")
                self.toks.append(("num", m.group(1), m.start(1)))
            elif m.group(2) is not None:
                name = m.group(2)
                if name not in self.vars:
                    raise error(f"{what}: unknown symbol {name!r} at position {m.start(2)} "
                                f"(allowed: {', '.join(variables)})")
                self.toks.append(("var", name, m.start(2)))
            elif m.group(3) is not None:
                ch = m.group(3)
                if ch not in "+-*/^()":
                    raise error(f"{what}: unexpected character {ch!r} at position {m.start(3)}")
                self.toks.append(("op", ch, m.start(3)))
        self.toks.append(("end", "", len(text)))
        self.i = 0
        self.one = {(0,) * self.nvars: 1}

    # -- helpers ---------------------------------------------------------------
    def fail(self, message: str, pos: int | None = None):
        if pos is None:
            pos = self.toks[self.i][2]
        raise self.error(f"{self.what}: {message} at position {pos}")

    def peek(self) -> tuple[str, str, int]:
        return self.toks[self.i]

    def take(self) -> tuple[str, str, int]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def check(self, p: SparsePoly) -> SparsePoly:
        lim = self.limits
        if len(p) > lim.max_terms:
            self.fail(f"too many terms (> {lim.max_terms})")
        for mono, c in p.items():
            if sum(mono) > lim.max_degree:
                self.fail(f"degree above {lim.max_degree}")
            bits = (c.numerator.bit_length() + c.denominator.bit_length()
                    if isinstance(c, Fraction) else c.bit_length())
            if bits > lim.max_coeff_bits:
                self.fail("coefficient too large")
        return p

    def mul(self, a: SparsePoly, b: SparsePoly) -> SparsePoly:
        self.work += len(a) * len(b)
        if self.work > self.limits.max_work:
            self.fail("expression too expensive to expand")
        return self.check(poly_mul(a, b))

    # -- values are (numerator, denominator) pairs ------------------------------
    def parse(self) -> tuple[SparsePoly, SparsePoly]:
        if self.peek()[0] == "end":
            self.fail("empty expression")
        val = self.expr(0)
        kind, tok, pos = self.peek()
        if kind != "end":
            self.fail(f"unexpected {tok!r}", pos)
        return val

    def expr(self, depth: int):
        num, den = self.term(depth)
        while True:
            kind, tok, _ = self.peek()
            if kind == "op" and tok in "+-":
                self.take()
                n2, d2 = self.term(depth)
                if tok == "-":
                    n2 = poly_scale(n2, -1)
                if d2 == den:
                    num = self.check(poly_add(num, n2))
                else:
                    num = self.check(poly_add(self.mul(num, d2), self.mul(n2, den)))
                    den = self.mul(den, d2)
            else:
                return num, den

    def term(self, depth: int):
        num, den = self.unary(depth)
        while True:
            kind, tok, pos = self.peek()
            if kind == "op" and tok in "*/":
                self.take()
                n2, d2 = self.unary(depth)
                if tok == "*":
                    num, den = self.mul(num, n2), self.mul(den, d2)
                else:
                    if not n2:
                        self.fail("division by zero", pos)
                    if not self.rational and not _is_constant(n2):
                        self.fail("division by a non-constant", pos)
                    num, den = self.mul(num, d2), self.mul(den, n2)
                if not self.rational and _is_constant(den) and den != self.one:
                    c = Fraction(den[(0,) * self.nvars])
                    num, den = poly_scale(num, 1 / c), self.one
            else:
                return num, den

    def unary(self, depth: int):
        kind, tok, _ = self.peek()
        if kind == "op" and tok in "+-":
            if depth >= self.limits.max_depth:
                self.fail(f"nesting deeper than {self.limits.max_depth}")
            self.take()
            num, den = self.unary(depth + 1)
            return (poly_scale(num, -1), den) if tok == "-" else (num, den)
        return self.power(depth)

    def power(self, depth: int):
        num, den = self.atom(depth)
        kind, tok, pos = self.peek()
        if kind == "op" and tok == "^":
            self.take()
            k2, t2, p2 = self.take()
            if k2 != "num":
                self.fail("exponent must be a non-negative integer literal", p2)
            e = int(t2)
            if e > self.limits.max_exponent:
                self.fail(f"exponent {e} above {self.limits.max_exponent}", p2)
            if e == 0 and not num:
                self.fail("0^0", p2)
            rn, rd = self.one, self.one
            for _ in range(e):
                rn, rd = self.mul(rn, num), self.mul(rd, den)
            num, den = rn, rd
            k3, t3, p3 = self.peek()
            if k3 == "op" and t3 == "^":
                self.fail("chained '^' (use parentheses)", p3)
        return num, den

    def atom(self, depth: int):
        kind, tok, pos = self.take()
        if kind == "num":
            v = int(tok)
            return ({(0,) * self.nvars: v} if v else {}), self.one
        if kind == "var":
            mono = [0] * self.nvars
            mono[self.vars[tok]] = 1
            return {tuple(mono): 1}, self.one
        if kind == "op" and tok == "(":
            if depth >= self.limits.max_depth:
                self.fail(f"nesting deeper than {self.limits.max_depth}", pos)
            val = self.expr(depth + 1)
            k2, t2, p2 = self.take()
            if not (k2 == "op" and t2 == ")"):
                self.fail("missing ')'", p2)
            return val
        if kind == "end":
            self.fail("unexpected end of expression", pos)
        self.fail(f"unexpected {tok!r}", pos)
        raise AssertionError  # pragma: no cover


def _is_constant(p: SparsePoly) -> bool:
    return len(p) <= 1 and all(not any(m) for m in p)


def poly_add(a: SparsePoly, b: SparsePoly) -> SparsePoly:
    """a + b (sparse, exact)."""
    out = dict(a)
    for m, c in b.items():
        s = out.get(m, 0) + c
        if s:
            out[m] = s
        else:
            out.pop(m, None)
    return out


def poly_scale(a: SparsePoly, c: Coeff) -> SparsePoly:
    """c · a."""
    if not c:
        return {}
    return {m: v * c for m, v in a.items()}


def poly_mul(a: SparsePoly, b: SparsePoly) -> SparsePoly:
    """a · b (commutative variables)."""
    out: SparsePoly = {}
    for ma, ca in a.items():
        for mb, cb in b.items():
            m = tuple(x + y for x, y in zip(ma, mb, strict=False))
            s = out.get(m, 0) + ca * cb
            if s:
                out[m] = s
            else:
                out.pop(m, None)
    return out


def _normalize_coeffs(p: SparsePoly) -> SparsePoly:
    out: SparsePoly = {}
    for m, c in p.items():
        if isinstance(c, Fraction) and c.denominator == 1:
            c = c.numerator
        out[m] = c
    return out


def parse_polynomial(text: str, variables: tuple[str, ...], *,
                     limits: ExprLimits = DEFAULT_LIMITS,
                     error: type[NtkhgmError] = PfaffianFileError,
                     what: str = "expression") -> SparsePoly:
    """Parse a polynomial (division by nonzero constants only) into a sparse dict."""
    num, den = _Parser(text, tuple(variables), False, limits, error, what).parse()
    assert _is_constant(den)
    return _normalize_coeffs(num)


_COEF = re.compile(r"(\d+)(?:/(\d+))?")
_FACTOR = re.compile(r"([a-z][a-z0-9]*)(?:\^(\d+))?")
_FLAT = re.compile(r"[-+*/^a-z0-9]+")


def _fast_poly(text: str, index: dict[str, int], limits: ExprLimits) -> SparsePoly | None:
    """A flat canonical sum of terms (``format_polynomial`` output), or None to fall back."""
    if not text or not _FLAT.fullmatch(text) or "--" in text or "+-" in text:
        return None
    out: SparsePoly = {}
    n = len(index)
    for term in re.split(r"(?=[-+])", text):
        if not term:
            continue
        sign = 1
        if term[0] in "+-":
            sign = -1 if term[0] == "-" else 1
            term = term[1:]
        factors = term.split("*")
        coef: Coeff = sign
        m = _COEF.fullmatch(factors[0])
        if m is not None:
            if len(m.group(1)) > limits.max_digits or len(m.group(2) or "") > limits.max_digits:
                return None
            den = int(m.group(2)) if m.group(2) else 1
            if den == 0:
                return None
            coef = Fraction(sign * int(m.group(1)), den) if den != 1 else sign * int(m.group(1))
            factors = factors[1:]
        mono = [0] * n
        for f in factors:
            fm = _FACTOR.fullmatch(f)
            if fm is None or fm.group(1) not in index:
                return None
            e = int(fm.group(2)) if fm.group(2) else 1
            if fm.group(2) and (len(fm.group(2)) > 4 or e > limits.max_exponent):
                return None
            mono[index[fm.group(1)]] += e
        key = tuple(mono)
        if sum(key) > limits.max_degree or key in out:
            return None
        if coef:
            out[key] = coef
        if len(out) > limits.max_terms:
            return None
    return out


def parse_rational(text: str, variables: tuple[str, ...], *,
                   limits: ExprLimits = DEFAULT_LIMITS,
                   error: type[NtkhgmError] = PfaffianFileError,
                   what: str = "expression") -> tuple[SparsePoly, SparsePoly]:
    """Parse a rational function into (numerator, denominator) sparse dicts (not reduced).

    Text in the canonical form ``P`` or ``(P)/(Q)`` of flat sums of terms takes a
    fast path; anything else goes through the full recursive-descent parser.
    """
    if isinstance(text, str) and len(text) <= limits.max_length and text.isascii():
        index = {v: i for i, v in enumerate(variables)}
        if text.startswith("(") and text.endswith(")") and ")/(" in text:
            head, _, tail = text[1:-1].partition(")/(")
            num = _fast_poly(head, index, limits)
            den = _fast_poly(tail, index, limits) if num is not None else None
            if num is not None and den:
                return num, den
        else:
            num = _fast_poly(text, index, limits)
            if num is not None:
                return num, {(0,) * len(variables): 1}
    num, den = _Parser(text, tuple(variables), True, limits, error, what).parse()
    if not den:
        raise error(f"{what}: zero denominator")
    return _normalize_coeffs(num), _normalize_coeffs(den)


def _format_coeff(c: Coeff) -> str:
    c = Fraction(c)
    return str(c.numerator) if c.denominator == 1 else f"{c.numerator}/{c.denominator}"


def format_polynomial(p: SparsePoly, variables: tuple[str, ...]) -> str:
    """Canonical text of a polynomial: terms by descending (degree, exponents)."""
    if not p:
        return "0"
    parts: list[str] = []
    for mono in sorted(p, key=lambda m: (sum(m), m), reverse=True):
        c = Fraction(p[mono])
        sign = "-" if c < 0 else "+"
        c = abs(c)
        factors = [v if e == 1 else f"{v}^{e}" for v, e in zip(variables, mono, strict=False) if e]
        if not factors:
            body = _format_coeff(c)
        elif c == 1:
            body = "*".join(factors)
        else:
            body = _format_coeff(c) + "*" + "*".join(factors)
        parts.append(sign + body)
    text = "".join(parts)
    return text[1:] if text[0] == "+" else text
