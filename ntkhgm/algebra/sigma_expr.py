"""Safe σ expressions for user activations (initial values, docs/math.md §5).

A user activation given by its annihilator also needs σ itself (or σ') for the
1-D moments M_n(t) = ∫ uⁿ f(u) e^{t u²} du.  The user writes f as a small
expression in ``u``; this module parses it with a strict grammar and compiles
the syntax tree into a vectorised numpy function by composing closures — no
``eval``, ``exec``, ``sympify`` or ``lambdify`` ever sees the text::

    expr  := term (('+' | '-') term)*
    term  := unary (('*' | '/') unary)*
    unary := ('+' | '-') unary | power
    power := atom (('^' | '**') unary)?
    atom  := NUMBER | 'u' | 'pi' | 'e' | FUNC '(' expr ')' | '(' expr ')'
    FUNC  := exp log sqrt sin cos tan sinh cosh tanh arctan abs erf erfc
             step (Heaviside Y, 0 at u ≤ 0)  ncdf (Φ)  npdf (φ)

:func:`check_annihilates` verifies numerically, away from u = 0, that the
annihilator kills the expression (docs/math.md §3), using sympy objects built from
the same syntax tree.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

from ..errors import InputError
from ._tokens import TokenCursor
from .annihilator import Annihilator

__all__ = ["SigmaExpression", "parse_sigma", "SigmaSyntaxError", "check_annihilates"]

MAX_LENGTH = 500
MAX_DEPTH = 32
MAX_NODES = 300

_FUNCS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "exp": np.exp, "log": np.log, "sqrt": np.sqrt, "sin": np.sin, "cos": np.cos,
    "tan": np.tan, "sinh": np.sinh, "cosh": np.cosh, "tanh": np.tanh, "arctan": np.arctan,
    "abs": np.abs, "erf": special.erf, "erfc": special.erfc,
    "step": lambda x: (x > 0).astype(float), "ncdf": special.ndtr,
    "npdf": lambda x: np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi),
}
_CONSTS = {"pi": math.pi, "e": math.e}
_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|"
                    r"([A-Za-z_][A-Za-z0-9_]*)|(\*\*|[-+*/^()]))")


class SigmaSyntaxError(InputError):
    """A σ expression violates the grammar of ntkhgm.algebra.sigma_expr."""


Node = tuple  # ("num", x) | ("u",) | ("fn", name, node) | ("op", sym, a, b) | ("neg", a)


@dataclass(frozen=True)
class SigmaExpression:
    """A parsed σ expression: canonical text, numpy function, sympy conversion."""

    text: str
    tree: Node

    def __call__(self, u) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.asarray(_evaluate(self.tree, np.asarray(u, dtype=float)), dtype=float) \
                * np.ones_like(np.asarray(u, dtype=float))

    def to_sympy(self, var):
        return _to_sympy(self.tree, var)


def _fail(text: str, msg: str, pos: int):
    shown = text if len(text) <= 60 else text[:57] + "..."
    raise SigmaSyntaxError(f"expression {ascii(shown)}: {msg} at position {pos}")


class _Parser(TokenCursor):
    def __init__(self, text: str):
        self.text = text
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        end = len(text.rstrip())
        while pos < end:
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                p = pos + (len(text[pos:]) - len(text[pos:].lstrip()))
                _fail(text, f"unexpected character {text[p]!r}", p)
            if m.group(1) is not None:
                self.toks.append(("num", m.group(1), m.start(1)))
            elif m.group(2) is not None:
                name = m.group(2)
                if name != "u" and name not in _FUNCS and name not in _CONSTS:
                    _fail(text, f"unknown name {name!r}", m.start(2))
                self.toks.append(("name", name, m.start(2)))
            else:
                self.toks.append(("op", m.group(3), m.start(3)))
            pos = m.end()
        self.toks.append(("end", "", len(text)))
        self.i = 0
        self.nodes = 0

    def node(self, n: Node, pos: int) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            _fail(self.text, "expression too large", pos)
        return n

    def parse(self) -> Node:
        if self.peek()[0] == "end":
            _fail(self.text, "empty expression", 0)
        n = self.expr(0)
        k, t, p = self.peek()
        if k != "end":
            _fail(self.text, f"unexpected {t!r}", p)
        return n

    def expr(self, d):
        n = self.term(d)
        while self.peek()[0] == "op" and self.peek()[1] in "+-" and self.peek()[1] != "**":
            _, op, p = self.take()
            n = self.node(("op", op, n, self.term(d)), p)
        return n

    def term(self, d):
        n = self.unary(d)
        while self.peek()[0] == "op" and self.peek()[1] in ("*", "/"):
            _, op, p = self.take()
            n = self.node(("op", op, n, self.unary(d)), p)
        return n

    def unary(self, d):
        k, t, p = self.peek()
        if k == "op" and t in ("+", "-"):
            if d >= MAX_DEPTH:
                _fail(self.text, "nesting too deep", p)
            self.take()
            n = self.unary(d + 1)
            return self.node(("neg", n), p) if t == "-" else n
        return self.power(d)

    def power(self, d):
        n = self.atom(d)
        k, t, p = self.peek()
        if k == "op" and t in ("^", "**"):
            if d >= MAX_DEPTH:
                _fail(self.text, "nesting too deep", p)
            self.take()
            n = self.node(("op", "^", n, self.unary(d + 1)), p)
        return n

    def atom(self, d):
        k, t, p = self.take()
        if k == "num":
            v = float(t)
            if not math.isfinite(v):
                _fail(self.text, "number out of range", p)
            return self.node(("num", v), p)
        if k == "name":
            if t == "u":
                return self.node(("u",), p)
            if t in _CONSTS:
                return self.node(("num", _CONSTS[t]), p)
            k2, t2, p2 = self.take()
            if not (k2 == "op" and t2 == "("):
                _fail(self.text, f"'{t}' must be followed by '('", p2)
            if d >= MAX_DEPTH:
                _fail(self.text, "nesting too deep", p)
            arg = self.expr(d + 1)
            k3, t3, p3 = self.take()
            if not (k3 == "op" and t3 == ")"):
                _fail(self.text, "missing ')'", p3)
            return self.node(("fn", t, arg), p)
        if k == "op" and t == "(":
            if d >= MAX_DEPTH:
                _fail(self.text, "nesting too deep", p)
            n = self.expr(d + 1)
            k3, t3, p3 = self.take()
            if not (k3 == "op" and t3 == ")"):
                _fail(self.text, "missing ')'", p3)
            return n
        _fail(self.text, "unexpected end" if k == "end" else f"unexpected {t!r}", p)


def _evaluate(n: Node, u: np.ndarray):
    tag = n[0]
    if tag == "num":
        return n[1]
    if tag == "u":
        return u
    if tag == "neg":
        return -_evaluate(n[1], u)
    if tag == "fn":
        return _FUNCS[n[1]](np.asarray(_evaluate(n[2], u), dtype=float))
    a, b = _evaluate(n[2], u), _evaluate(n[3], u)
    op = n[1]
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return np.divide(a, b)
    return np.power(a, b)


def _to_sympy(n: Node, var):
    import sympy

    tag = n[0]
    if tag == "num":
        v = n[1]
        if v == math.pi:
            return sympy.pi
        if v == math.e:
            return sympy.E
        return sympy.nsimplify(v) if float(v).is_integer() else sympy.Float(v, 30)
    if tag == "u":
        return var
    if tag == "neg":
        return -_to_sympy(n[1], var)
    if tag == "fn":
        x = _to_sympy(n[2], var)
        name = n[1]
        table = {"exp": sympy.exp, "log": sympy.log, "sqrt": sympy.sqrt, "sin": sympy.sin,
                 "cos": sympy.cos, "tan": sympy.tan, "sinh": sympy.sinh, "cosh": sympy.cosh,
                 "tanh": sympy.tanh, "arctan": sympy.atan, "abs": sympy.Abs,
                 "erf": sympy.erf, "erfc": sympy.erfc}
        if name in table:
            return table[name](x)
        if name == "step":
            return sympy.Heaviside(x, 0)
        if name == "ncdf":
            return (1 + sympy.erf(x / sympy.sqrt(2))) / 2
        return sympy.exp(-x ** 2 / 2) / sympy.sqrt(2 * sympy.pi)       # npdf
    a, b = _to_sympy(n[2], var), _to_sympy(n[3], var)
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b, "^": a ** b}[n[1]]


def _canonical(n: Node) -> str:
    tag = n[0]
    if tag == "num":
        return repr(float(n[1]))
    if tag == "u":
        return "u"
    if tag == "neg":
        return f"(-{_canonical(n[1])})"
    if tag == "fn":
        return f"{n[1]}({_canonical(n[2])})"
    return f"({_canonical(n[2])}{n[1]}{_canonical(n[3])})"


def parse_sigma(text: str) -> SigmaExpression:
    """Parse a σ expression (module grammar); return it with its canonical text."""
    if not isinstance(text, str):
        raise SigmaSyntaxError("expression must be a string")
    if len(text) > MAX_LENGTH:
        raise SigmaSyntaxError(f"expression too long ({len(text)} > {MAX_LENGTH} characters)")
    for i, ch in enumerate(text):
        if ord(ch) > 127 or (ord(ch) < 32 and ch not in " \t"):
            _fail(text, f"character {ch!r} not allowed", i)
    tree = _Parser(text).parse()
    return SigmaExpression(_canonical(tree), tree)


def check_annihilates(ann: Annihilator, expr: SigmaExpression, *, tol: float = 1e-8) -> float:
    """max |L•f| / scale at sample points u ≠ 0 (docs/math.md §3); raise InputError if not small."""
    import sympy

    u = sympy.Symbol("u", real=True)
    f = expr.to_sympy(u)
    lf = ann.apply_to_sympy(f, u)
    worst = 0.0
    for x in (-2.3, -1.1, -0.45, 0.37, 0.9, 1.7, 2.6):
        val = complex(lf.subs(u, sympy.Float(x, 30)).evalf(30))
        scale = 1.0 + sum(abs(float(c)) * abs(x) ** a * abs(complex(
            sympy.diff(f, u, b).subs(u, sympy.Float(x, 30)).evalf(30)))
            for a, b, c in ann.terms)
        worst = max(worst, abs(val) / scale)
    if not worst <= tol:
        raise InputError(f"the annihilator {ann.text()} does not annihilate {expr.text} "
                         f"(relative residual {worst:.1e} away from u = 0)")
    return worst
