"""Strict parsing of annihilator strings (docs/math.md §3) into a Weyl-algebra normal form.

An annihilator is an operator L = Σ c·u^a·du^b in the first Weyl algebra
Q⟨u, du⟩ (du·u = u·du + 1).  The accepted text is a polynomial expression in the
two symbols ``u`` and ``du`` with integer literals, ``+ - * / ^ ( )`` and blanks —
nothing else (``/`` only by a nonzero number, so coefficients are rational).
Products are evaluated in the Weyl algebra, so ``du*u`` means u·du + 1.

Everything a user typed is checked here, before any computer algebra system
runs; the only text that ever reaches a CAS is re-generated from the normal form
(:meth:`Annihilator.text` and the backends' own formatters), never the user's
string.  Violations raise :class:`~ntkhgm.errors.AnnihilatorSyntaxError` with a
one-line message naming the position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from math import comb, perm

from ..errors import AnnihilatorSyntaxError
from ._tokens import TokenCursor

__all__ = ["Annihilator", "parse_annihilator", "MAX_LENGTH", "MAX_DEPTH", "MAX_EXPONENT",
           "MAX_ORDER"]

MAX_LENGTH = 1000     # characters
MAX_DEPTH = 16        # nested parentheses / unary signs
MAX_EXPONENT = 12     # literal exponent after '^'
MAX_ORDER = 12        # degree in u and in du of every term of the normal form
MAX_TERMS = 200
MAX_DIGITS = 30

WeylTerms = dict[tuple[int, int], Fraction]   # (a, b) -> c  for c·u^a·du^b

_TOKEN = re.compile(r"[ \t]*(?:(\d+)|(du|u)(?![A-Za-z0-9_])|([A-Za-z_][A-Za-z0-9_]*)|(.))")


def weyl_mul(p: WeylTerms, q: WeylTerms) -> WeylTerms:
    """Product in Q⟨u, du⟩: (u^a du^b)(u^c du^d) = Σ_k C(b,k) c!/(c−k)! u^{a+c−k} du^{b+d−k}."""
    out: WeylTerms = {}
    for (a, b), c1 in p.items():
        for (c, d), c2 in q.items():
            for k in range(min(b, c) + 1):
                key = (a + c - k, b + d - k)
                v = out.get(key, Fraction(0)) + c1 * c2 * comb(b, k) * perm(c, k)
                if v:
                    out[key] = v
                else:
                    out.pop(key, None)
    return out


def _add(p: WeylTerms, q: WeylTerms, sign: int = 1) -> WeylTerms:
    out = dict(p)
    for k, v in q.items():
        s = out.get(k, Fraction(0)) + sign * v
        if s:
            out[k] = s
        else:
            out.pop(k, None)
    return out


@dataclass(frozen=True)
class Annihilator:
    """An operator Σ c·u^a·du^b in normal form (u's left of du's), docs/math.md §3–§4."""

    terms: tuple[tuple[int, int, Fraction], ...]   # (a, b, c), sorted, c ≠ 0

    @classmethod
    def from_dict(cls, d: WeylTerms) -> Annihilator:
        items = sorted(((a, b, Fraction(c)) for (a, b), c in d.items() if c),
                       key=lambda t: (-t[1], -t[0]))
        return cls(tuple(items))

    @property
    def order(self) -> int:
        """Order in du."""
        return max(b for _, b, _ in self.terms)

    @property
    def degree(self) -> int:
        """Degree in u."""
        return max(a for a, _, _ in self.terms)

    def as_dict(self) -> WeylTerms:
        return {(a, b): c for a, b, c in self.terms}

    def text(self, u: str = "u", du: str = "du") -> str:
        """Canonical text, e.g. ``u*du-1`` (also re-parsable by :func:`parse_annihilator`)."""
        parts = []
        for a, b, c in self.terms:
            factors = ([u if a == 1 else f"{u}^{a}"] if a else []) + \
                      ([du if b == 1 else f"{du}^{b}"] if b else [])
            mag = abs(c)
            cs = str(mag.numerator) if mag.denominator == 1 else \
                f"{mag.numerator}/{mag.denominator}"
            if not factors:
                body = cs
            elif mag == 1:
                body = "*".join(factors)
            else:
                body = cs + "*" + "*".join(factors)
            parts.append(("-" if c < 0 else "+") + body)
        s = "".join(parts)
        return s[1:] if s.startswith("+") else s

    def __str__(self) -> str:
        return self.text()

    def apply_to_sympy(self, expr, var):
        """L•f for a sympy expression f(var) (used by checks of user annihilators)."""
        import sympy

        total = sympy.Integer(0)
        for a, b, c in self.terms:
            total += sympy.Rational(c.numerator, c.denominator) * var ** a * \
                sympy.diff(expr, var, b)
        return total


class _AnnParser(TokenCursor):
    def __init__(self, text: str):
        self.text = text
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        end = len(text.rstrip(" \t"))
        while pos < end:
            m = _TOKEN.match(text, pos)
            assert m is not None
            if m.group(1) is not None:
                if len(m.group(1)) > MAX_DIGITS:
                    self.fail(f"number longer than {MAX_DIGITS} digits", m.start(1))
                self.toks.append(("num", m.group(1), m.start(1)))
            elif m.group(2) is not None:
                self.toks.append(("var", m.group(2), m.start(2)))
            elif m.group(3) is not None:
                self.fail(f"unknown symbol {m.group(3)!r} (only u and du are allowed)",
                          m.start(3))
            elif m.group(4) is not None:
                ch = m.group(4)
                if ch not in "+-*/^()":
                    self.fail(f"unexpected character {ch!r}", m.start(4))
                self.toks.append(("op", ch, m.start(4)))
            pos = m.end()
            if m.end() == m.start():  # trailing blanks
                break
        self.toks.append(("end", "", len(text)))
        self.i = 0

    def fail(self, msg: str, pos: int | None = None):
        if pos is None:
            pos = self.toks[self.i][2]
        raise AnnihilatorSyntaxError(f"annihilator {_show(self.text)}: {msg} at position {pos}")

    def check(self, p: WeylTerms, pos: int) -> WeylTerms:
        if len(p) > MAX_TERMS:
            self.fail("too many terms", pos)
        for a, b in p:
            if a > MAX_ORDER or b > MAX_ORDER:
                self.fail(f"degree in u or du above {MAX_ORDER}", pos)
        return p

    def parse(self) -> WeylTerms:
        if self.peek()[0] == "end":
            self.fail("empty operator")
        v = self.expr(0)
        kind, tok, pos = self.peek()
        if kind != "end":
            self.fail(f"unexpected {tok!r}", pos)
        return v

    def expr(self, depth):
        v = self.term(depth)
        while True:
            kind, tok, pos = self.peek()
            if kind == "op" and tok in "+-":
                self.take()
                v = self.check(_add(v, self.term(depth), 1 if tok == "+" else -1), pos)
            else:
                return v

    def term(self, depth):
        v = self.unary(depth)
        while True:
            kind, tok, pos = self.peek()
            if kind == "op" and tok in "*/":
                self.take()
                w = self.unary(depth)
                if tok == "*":
                    # cheap bound before the product: degrees add up
                    if v and w and (max(a for a, _ in v) + max(a for a, _ in w) > MAX_ORDER or
                                    max(b for _, b in v) + max(b for _, b in w) > MAX_ORDER):
                        self.fail(f"degree in u or du above {MAX_ORDER}", pos)
                    v = self.check(weyl_mul(v, w), pos)
                else:
                    if not w:
                        self.fail("division by zero", pos)
                    if set(w) != {(0, 0)}:
                        self.fail("division by a non-constant", pos)
                    c = w[(0, 0)]
                    v = {k: x / c for k, x in v.items()}
            else:
                return v

    def unary(self, depth):
        kind, tok, pos = self.peek()
        if kind == "op" and tok in "+-":
            if depth >= MAX_DEPTH:
                self.fail(f"nesting deeper than {MAX_DEPTH}", pos)
            self.take()
            v = self.unary(depth + 1)
            return {k: -x for k, x in v.items()} if tok == "-" else v
        return self.power(depth)

    def power(self, depth):
        v = self.atom(depth)
        kind, tok, pos = self.peek()
        if kind == "op" and tok == "^":
            self.take()
            k2, t2, p2 = self.take()
            if k2 != "num":
                self.fail("exponent must be a non-negative integer", p2)
            e = int(t2)
            if e > MAX_EXPONENT:
                self.fail(f"exponent {e} above {MAX_EXPONENT}", p2)
            if v and e * max(max(a, b) for a, b in v) > MAX_ORDER:
                self.fail(f"degree in u or du above {MAX_ORDER}", p2)
            r: WeylTerms = {(0, 0): Fraction(1)}
            for _ in range(e):
                r = self.check(weyl_mul(r, v), p2)
            v = r
            k3, t3, p3 = self.peek()
            if k3 == "op" and t3 == "^":
                self.fail("chained '^' (use parentheses)", p3)
        return v

    def atom(self, depth):
        kind, tok, pos = self.take()
        if kind == "num":
            n = int(tok)
            return {(0, 0): Fraction(n)} if n else {}
        if kind == "var":
            return {(1, 0): Fraction(1)} if tok == "u" else {(0, 1): Fraction(1)}
        if kind == "op" and tok == "(":
            if depth >= MAX_DEPTH:
                self.fail(f"nesting deeper than {MAX_DEPTH}", pos)
            v = self.expr(depth + 1)
            k2, t2, p2 = self.take()
            if not (k2 == "op" and t2 == ")"):
                self.fail("missing ')'", p2)
            return v
        if kind == "end":
            self.fail("unexpected end of operator", pos)
        self.fail(f"unexpected {tok!r}", pos)


def _show(text: str) -> str:
    s = text if len(text) <= 60 else text[:57] + "..."
    return ascii(s)


def parse_annihilator(text: str) -> Annihilator:
    """Parse and validate an annihilator string (docs/math.md §3); return its normal form."""
    if not isinstance(text, str):
        raise AnnihilatorSyntaxError(f"annihilator must be a string, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise AnnihilatorSyntaxError(
            f"annihilator too long ({len(text)} characters, at most {MAX_LENGTH})")
    for i, ch in enumerate(text):
        if ord(ch) > 127:
            raise AnnihilatorSyntaxError(
                f"annihilator {_show(text)}: non-ASCII character {ch!r} at position {i}")
        if ch in "\r\n\x00" or (ord(ch) < 32 and ch != "\t"):
            raise AnnihilatorSyntaxError(
                f"annihilator {_show(text)}: control character {ch!r} at position {i}")
    terms = _AnnParser(text).parse()
    if not terms:
        raise AnnihilatorSyntaxError(f"annihilator {_show(text)}: the operator is zero")
    return Annihilator.from_dict(terms)
