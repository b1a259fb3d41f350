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
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
MAX_EXPONENT = 64
"""Largest |exponent| of a power whose exponent is a constant (sympy computes
constant powers exactly: ``9^9^9^9`` would run for hours)."""
MAX_NUMBER = 1e30
"""Largest |value| of a constant sub-expression (numbers and constant powers)."""
CHECK_TIMEOUT_S = 20.0
"""Time limit of the symbolic check :func:`check_annihilates` (main thread)."""

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
            exponent = self.unary(d + 1)
            self._check_constant(exponent, p, exponent=True)
            n = self.node(("op", "^", n, exponent), p)
            self._check_constant(n, p)
        return n

    def _check_constant(self, n: Node, pos: int, exponent: bool = False) -> None:
        """Budget: a constant exponent within ±MAX_EXPONENT, a constant value within MAX_NUMBER."""
        if _has_u(n):
            return
        with np.errstate(all="ignore"):
            value = float(np.asarray(_evaluate(n, np.zeros(1)), dtype=float).ravel()[0])
        limit = MAX_EXPONENT if exponent else MAX_NUMBER
        if not (math.isfinite(value) and abs(value) <= limit):
            what = "exponent" if exponent else "constant"
            _fail(self.text, f"{what} out of range (must be a real number with "
                  f"|{what}| ≤ {limit:g})", pos)

    def atom(self, d):
        k, t, p = self.take()
        if k == "num":
            v = float(t)
            if not (math.isfinite(v) and abs(v) <= MAX_NUMBER):
                _fail(self.text, f"number out of range (|x| ≤ {MAX_NUMBER:g})", p)
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


def _has_u(n: Node) -> bool:
    tag = n[0]
    if tag == "u":
        return True
    if tag == "num":
        return False
    if tag == "neg":
        return _has_u(n[1])
    if tag == "fn":
        return _has_u(n[2])
    return _has_u(n[2]) or _has_u(n[3])


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


@contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise InputError when the block runs longer than ``seconds`` (main thread only).

    Uses SIGALRM, so it interrupts Python-level work (sympy, mpmath) between
    byte codes; the parser's size caps keep single C-level operations short.
    In other threads the block runs without a timer.
    """
    if threading.current_thread() is not threading.main_thread() or \
            not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise _Expired

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Expired:
        raise InputError(f"{what} took longer than {seconds:g} s; simplify the "
                         "expression") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class _Expired(BaseException):
    """The time limit of :func:`time_limit` ran out."""


def check_annihilates(ann: Annihilator, expr: SigmaExpression, *, tol: float = 1e-8,
                      timeout: float = CHECK_TIMEOUT_S) -> float:
    """max |L•f| / scale at sample points u ≠ 0 (docs/math.md §3); raise InputError if not small.

    The ratio is formed in 30-digit arithmetic, so values beyond the double range
    are compared correctly; a ratio that is not a finite real number (overflow,
    0/0, a complex value) fails the check — it never passes by being dropped.
    The check runs under ``timeout`` seconds.
    """
    with time_limit(timeout, f"checking {expr.text} against {ann.text()}"):
        try:
            return _check_annihilates(ann, expr, tol)
        except (ArithmeticError, ValueError, TypeError, RecursionError) as exc:
            if isinstance(exc, InputError):
                raise
            raise InputError(f"the annihilator {ann.text()} cannot be checked on {expr.text}: "
                             f"{type(exc).__name__} in the symbolic evaluation (values beyond "
                             "any floating-point range?)") from None


def _check_annihilates(ann: Annihilator, expr: SigmaExpression, tol: float) -> float:
    import sympy

    u = sympy.Symbol("u", real=True)
    f = expr.to_sympy(u)
    lf = ann.apply_to_sympy(f, u)
    worst = 0.0
    for x in (-2.3, -1.1, -0.45, 0.37, 0.9, 1.7, 2.6):
        X = sympy.Float(x, 30)
        val = sympy.Abs(lf.subs(u, X).evalf(30))
        scale = 1 + sum(abs(sympy.Rational(c.numerator, c.denominator)) * abs(X) ** a *
                        sympy.Abs(sympy.diff(f, u, b).subs(u, X).evalf(30))
                        for a, b, c in ann.terms)
        ratio = (val / scale).evalf(30)
        try:
            r = float(ratio) if ratio.is_real else math.nan
        except (TypeError, ValueError, OverflowError):
            r = math.nan
        if not math.isfinite(r):
            raise InputError(f"the annihilator {ann.text()} cannot be checked on {expr.text}: "
                             f"no finite residual at u = {x} (overflow or undefined value)")
        worst = max(worst, r)
    if not worst <= tol:
        raise InputError(f"the annihilator {ann.text()} does not annihilate {expr.text} "
                         f"(relative residual {worst:.1e} away from u = 0)")
    return worst
