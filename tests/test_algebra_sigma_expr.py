"""Safe σ expressions of user activations (issue 3 §1, issue 6 §2): no eval, checked."""

from __future__ import annotations

import json
import secrets

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ntkhgm.algebra.annihilator import parse_annihilator
from ntkhgm.algebra.pfaffian import PfaffianSystem, content_hash
from ntkhgm.algebra.sigma_expr import SigmaSyntaxError, check_annihilates, parse_sigma
from ntkhgm.errors import InputError, PfaffianFileError


@pytest.mark.parametrize("text, ann, ref", [
    ("u*step(u)", "u*du-1", lambda u: np.maximum(u, 0)),
    ("step(u)", "u*du", lambda u: (u > 0) * 1.0),
    ("step(u)*sin(u)", "u*(du^2+1)", lambda u: (u > 0) * np.sin(u)),
    ("u*ncdf(u)", "u^2*du^2+(u^2-2)*u*du+(2-u^2)", None),
    ("erf(u)", "du^2+2*u*du", None),
    ("2/sqrt(pi)*exp(-u^2)", "du+2*u", lambda u: 2 / np.sqrt(np.pi) * np.exp(-u * u)),
    ("u**3*step(u)", "u*du-3", lambda u: np.maximum(u, 0) ** 3),
])
def test_expressions_evaluate_and_satisfy_their_annihilators(text, ann, ref):
    e = parse_sigma(text)
    assert parse_sigma(e.text).text == e.text
    check_annihilates(parse_annihilator(ann), e)
    u = np.linspace(-3, 3, 13)
    assert e(u).shape == u.shape
    if ref is not None:
        assert np.allclose(e(u), ref(u), rtol=1e-14, atol=0)


def test_wrong_annihilator_is_reported():
    with pytest.raises(InputError, match="does not annihilate"):
        check_annihilates(parse_annihilator("u*du-1"), parse_sigma("u^2*step(u)"))


@pytest.mark.parametrize("text", [
    '__import__("os").system("touch /tmp/pwned")', "u.real", "lambda u: u", "u;1", "exp u",
    "x", "1e999", "u" * 600, "open('f')", "u[0]", "u if u else 0", "exp(u", "()",
    "(" * 40 + "u" + ")" * 40, "np.exp(u)", "u@u", "ü",
])
def test_hostile_expressions_refused(text):
    with pytest.raises(SigmaSyntaxError):
        parse_sigma(text)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="u()+-*/^.0123456789 expsinrtf", max_size=40))
def test_fuzz_only_typed_errors(text):
    try:
        parse_sigma(text)(np.linspace(-1, 1, 5))
    except SigmaSyntaxError:
        pass


def test_expression_in_pfaffian_file_is_validated(tmp_path):
    from ntkhgm.paths import shipped_pfaffian_dir

    text = (shipped_pfaffian_dir() / "relu.json").read_text()
    obj = json.loads(text)
    obj["expression"] = "(u*step(u))"
    obj["sha256"] = content_hash(obj)
    system = PfaffianSystem.from_json(json.dumps(obj))
    assert np.allclose(system.function()(np.array([-1.0, 2.0])), [0.0, 2.0])
    target = tmp_path / f"pwned-{secrets.token_hex(4)}"
    obj["expression"] = f'__import__("os").system("touch {target}")'
    obj["sha256"] = content_hash(obj)
    with pytest.raises(PfaffianFileError, match="bad expression"):
        PfaffianSystem.from_json(json.dumps(obj))
    assert not target.exists()
