"""Annihilator strings (math.md §3; issue 6): strict grammar, Weyl normal form, hostile input."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkhgm.activations import list_activations
from ntkhgm.algebra.annihilator import Annihilator, parse_annihilator, weyl_mul
from ntkhgm.errors import AnnihilatorSyntaxError, InputError

HOSTILE = [
    'u*du-1; shell("touch /tmp/pwned")',
    'system("touch /tmp/pwned")',
    "u*du-1$ quit;",
    "u*du-1;\nquit;",
    "u*du-1\x00",
    'u*du-1" + print("x")',
    "u*du-1 // comment",
    "u*du-1 # x",
    "u*du-1, 1",
    "u*du-1 == 0",
    "u**2",
    "2u",
    "u du",
    "dx11",
    "U*DU",
    "exec(1)",
    "__import__('os').system('x')",
    "u*dü",
    "u\u00b2",
    "（u）",
    "(" * 40 + "u" + ")" * 40,
    "-" * 40 + "u",
    "u^99",
    "u^2^3",
    "u^-1",
    "u^(2)",
    "u/u",
    "u/0",
    "1/du",
    "u*du-1" * 500,
    "9" * 100,
    "(u+du)^13",
    "du^12*u^12*du",
    "",
    "   ",
    "u-u",
    "()",
    "u+",
    "(u",
    "u)",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_strings_are_refused_with_one_line(text):
    with pytest.raises(AnnihilatorSyntaxError) as info:
        parse_annihilator(text)
    msg = str(info.value)
    assert "\n" not in msg and len(msg) < 300
    assert isinstance(info.value, InputError)


def test_error_names_position_and_character():
    with pytest.raises(AnnihilatorSyntaxError, match=r"';' at position 6"):
        parse_annihilator('u*du-1; shell("touch /tmp/pwned")')
    with pytest.raises(AnnihilatorSyntaxError, match=r"'system'.*position 0"):
        parse_annihilator('system("x")')
    with pytest.raises(AnnihilatorSyntaxError, match=r"non-ASCII"):
        parse_annihilator("u*dü")


@pytest.mark.parametrize("text, normal", [
    ("u*du-1", "u*du-1"),
    ("u*(du^2+1)", "u*du^2+u"),
    ("u^2*(du^2+1)", "u^2*du^2+u^2"),
    ("du*u", "u*du+1"),                  # Weyl algebra: du·u = u·du + 1
    ("du^2*u", "u*du^2+2*du"),
    ("(du^2+1)*u", "u*du^2+2*du+u"),
    ("1/2*u - (3/4)", "1/2*u-3/4"),
    ("  u * du  -  1 ", "u*du-1"),
    ("(2-u^2)*du^2-(u^3-4*u)*du", "-u^2*du^2+2*du^2-u^3*du+4*u*du"),
    ("-(-u)", "u"),
])
def test_normal_form(text, normal):
    ann = parse_annihilator(text)
    assert ann.text() == normal
    assert parse_annihilator(ann.text()) == ann


def test_catalog_annihilators_parse_and_kill_the_smooth_part():
    import sympy

    u = sympy.Symbol("u", positive=True)
    smooth = {  # σ on u > 0 (math.md §3)
        "relu": (u, 1), "resin": (sympy.sin(u), sympy.cos(u)),
        "erf": (sympy.erf(u), 2 / sympy.sqrt(sympy.pi) * sympy.exp(-u ** 2)),
        "sin": (sympy.sin(u), sympy.cos(u)),
        "relu2": (u ** 2, 2 * u), "relu3": (u ** 3, 3 * u ** 2),
    }
    for act in list_activations():
        if not act.holonomic:
            continue
        for deriv in (False, True):
            ann = parse_annihilator(act.annihilator_of(deriv))
            assert ann.order >= 1
            if act.name in smooth:
                f = smooth[act.name][1 if deriv else 0]
                assert sympy.simplify(ann.apply_to_sympy(f, u)) == 0, (act.name, deriv)


def test_weyl_product_is_associative_on_samples():
    a = {(1, 2): Fraction(3), (0, 1): Fraction(-1)}
    b = {(2, 1): Fraction(1), (1, 0): Fraction(2)}
    c = {(0, 2): Fraction(1), (3, 0): Fraction(1, 2)}
    assert weyl_mul(weyl_mul(a, b), c) == weyl_mul(a, weyl_mul(b, c))


def test_non_string_refused():
    with pytest.raises(AnnihilatorSyntaxError):
        parse_annihilator(12)  # type: ignore[arg-type]


_atoms = st.sampled_from(["u", "du", "1", "2", "3", "(u+1)", "(du-2)", "1/2"])


@st.composite
def _exprs(draw, depth=0):
    if depth > 2 or draw(st.booleans()):
        return draw(_atoms)
    op = draw(st.sampled_from(["+", "-", "*"]))
    return f"({draw(_exprs(depth + 1))}{op}{draw(_exprs(depth + 1))})"


@settings(max_examples=150, deadline=None)
@given(_exprs())
def test_roundtrip_property(text):
    try:
        ann = parse_annihilator(text)
    except AnnihilatorSyntaxError as exc:
        assert "zero" in str(exc) or "degree" in str(exc)
        return
    assert isinstance(ann, Annihilator)
    assert parse_annihilator(ann.text()) == ann


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_never_crashes(text):
    try:
        parse_annihilator(text)
    except AnnihilatorSyntaxError:
        pass
