"""Property-based fuzzing of everything ntkhgm reads (issue 13; hypothesis, bounded).

Each reader either returns a valid result or raises its typed error — never
another exception, never a hang; and the numeric range of the README holds for
(a, b, c) drawn over the whole double range (reference: mpmath).
"""

from __future__ import annotations

import json
import math
import os
import time

import mpmath
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ntkhgm
from ntkhgm.algebra import cache
from ntkhgm.algebra.backends.base import default_timeout, memory_limit
from ntkhgm.algebra.pfaffian import PfaffianSystem
from ntkhgm.algebra.sigma_expr import SigmaSyntaxError, parse_sigma
from ntkhgm.errors import CSVInputError, InputError, PfaffianFileError
from ntkhgm.io import MAX_ABS, read_csv

FUZZ = settings(max_examples=80, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# -- CSV ------------------------------------------------------------------------------------

CELLS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["٣", "３", "\u00a01", "1_0", "1e400", "-0", ".", "e5", "+", "0x10",
                     '"1"', '"', "nan", "inf", "", " ", "\x00", "1e-400", "١٢"]),
    st.text(max_size=6),
)


@FUZZ
@given(rows=st.lists(st.lists(CELLS, min_size=1, max_size=4), min_size=1, max_size=5),
       sep=st.sampled_from([",", ";", ", "]))
def test_csv_reader_returns_valid_data_or_a_located_error(tmp_path, rows, sep):
    p = tmp_path / "f.csv"
    p.write_text("\n".join(sep.join(r) for r in rows), encoding="utf-8", errors="replace")
    try:
        X, _, _ = read_csv(p)
    except CSVInputError as exc:
        assert str(exc).startswith(str(p))
        return
    assert X.dtype == np.float64 and np.all(np.isfinite(X)) and np.all(np.abs(X) <= MAX_ABS)


@FUZZ
@given(data=st.binary(max_size=200))
def test_csv_reader_on_arbitrary_bytes(tmp_path, data):
    p = tmp_path / "b.csv"
    p.write_bytes(data)
    try:
        X, _, _ = read_csv(p)
    except CSVInputError:
        return
    assert np.all(np.isfinite(X))


# -- σ expressions --------------------------------------------------------------------------

TOKENS = st.sampled_from(["u", "9", "2", "0.5", "1e30", "64", "65", "pi", "e", "^", "**",
                          "*", "/", "+", "-", "(", ")", "exp(", "step(", "sin(", "log(",
                          "sqrt(", "ncdf(", "u^", "^u", "8000", "9^9^9"])


@FUZZ
@given(tokens=st.lists(TOKENS, min_size=1, max_size=14))
def test_sigma_parser_is_total_and_fast(tokens):
    text = "".join(tokens)
    t0 = time.perf_counter()
    try:
        expr = parse_sigma(text)
    except SigmaSyntaxError:
        assert time.perf_counter() - t0 < 1
        return
    assert time.perf_counter() - t0 < 1
    values = expr(np.linspace(-3, 3, 7))
    assert values.shape == (7,)
    assert parse_sigma(expr.text).text == expr.text          # canonical text is a fixed point


# -- Pfaffian files ----------------------------------------------------------------------------

_RELU = None


def _relu_text() -> str:
    global _RELU
    if _RELU is None:
        system = cache.load_pfaffian("relu", False)
        _RELU = system.to_json()
    return _RELU


@FUZZ
@given(data=st.data())
def test_mutated_pfaffian_file_is_refused_or_unchanged(data):
    text = _relu_text()
    ops = data.draw(st.lists(st.tuples(st.integers(0, len(text) - 1),
                                       st.sampled_from(["flip", "delete", "insert", "dup"]),
                                       st.characters(codec="ascii")), min_size=1, max_size=3))
    t = text
    for pos, op, ch in ops:
        pos %= max(len(t), 1)
        if op == "flip":
            t = t[:pos] + ch + t[pos + 1:]
        elif op == "delete":
            t = t[:pos] + t[pos + 1:]
        elif op == "insert":
            t = t[:pos] + ch + t[pos:]
        else:
            t = t[:pos] + t[pos:pos + 20] + t[pos:]
    try:
        system = PfaffianSystem.from_json(t, source="fuzzed")
    except PfaffianFileError:
        return
    # only semantically void edits (whitespace) may load, and they load the same system
    assert json.loads(t) == json.loads(text)
    assert system.to_json() == text


@FUZZ
@given(key=st.sampled_from(["activation", "derivative", "function", "annihilator", "variables",
                            "std_monomials", "rank", "matrices", "initial_values", "backend",
                            "timings", "schema", "sha256"]),
       value=st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                          lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=4), inner, max_size=3),
                          max_leaves=8))
def test_any_value_in_any_key_is_refused(key, value):
    obj = json.loads(_relu_text())
    if obj[key] == value:
        return
    obj[key] = value
    try:
        PfaffianSystem.from_json(json.dumps(obj))
    except PfaffianFileError:
        return
    raise AssertionError(f"accepted {key} = {value!r}")


# -- environment -------------------------------------------------------------------------------

@FUZZ
@given(raw=st.text(max_size=12))
def test_cas_variables_are_valid_or_refused(raw):
    if "\x00" in raw:
        return                       # the OS cannot hold it in an environment variable
    old = {k: os.environ.get(k) for k in ("NTKHGM_CAS_MEMORY_MB", "NTKHGM_CAS_TIMEOUT")}
    try:
        os.environ["NTKHGM_CAS_MEMORY_MB"] = raw
        os.environ["NTKHGM_CAS_TIMEOUT"] = raw
        try:
            mb = memory_limit() // 2 ** 20
            assert 64 <= mb <= 2 ** 24
        except InputError:
            pass
        try:
            t = default_timeout()
            assert math.isfinite(t) and 0 < t <= 7 * 24 * 3600
        except InputError:
            pass
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -- the numeric range -------------------------------------------------------------------------

MAGNITUDE = st.floats(min_value=-300.0, max_value=307.0).map(lambda e: 10.0 ** e)


@FUZZ
@given(a=MAGNITUDE, b=MAGNITUDE, rho=st.floats(-1.0, 1.0))
def test_relu_and_erf_duals_over_the_double_range(a, b, rho):
    with mpmath.workdps(60):    # local precision: never change the global mpmath context
        A, B = mpmath.mpf(a), mpmath.mpf(b)
        c = float(rho * mpmath.sqrt(A * B))
        C = mpmath.mpf(c)
        r = mpmath.sqrt(A * B)
        th = mpmath.acos(max(-1, min(1, C / r)))
        ref_relu = r * (mpmath.sin(th) + (mpmath.pi - th) * mpmath.cos(th)) / (2 * mpmath.pi)
        x = C / mpmath.sqrt((A + 0.5) * (B + 0.5))
        ref_erf = 2 / mpmath.pi * mpmath.asin(x)
        # float64 conditioning of arcsin near ±1: a rounding ε of x costs ε·x/√(1 − x²)
        erf_cond = float(abs(x) / mpmath.sqrt(max(1 - x * x, mpmath.mpf(10) ** -60)))
        half_root = float(r / 2)
    relu = float(ntkhgm.dual("relu", a, b, c, method="closed"))
    # relative to the Cauchy–Schwarz scale √(ab)/2 (the value itself can vanish at ρ = −1)
    assert abs(relu - float(ref_relu)) <= 1e-12 * half_root
    erf = float(ntkhgm.dual("erf", a, b, c, method="closed"))
    assert abs(erf - float(ref_erf)) <= 1e-12 + 8 * 2.2e-16 * erf_cond


@FUZZ
@given(data=st.data(), n=st.integers(2, 5), d=st.integers(2, 3), depth=st.integers(1, 3))
def test_relu_kernel_over_the_readme_range(data, n, d, depth):
    """ReLU's NTK is homogeneous of degree 1 in each argument: Θ(x, y) = ‖x‖‖y‖Θ(x̂, ŷ).

    Rows get independent scales 10^[-150, 150]; the reference is the arc-cosine
    recursion (conftest) on the unit rows, rescaled by the exact row norms.
    """
    from conftest import relu_ntk_reference

    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    U = rng.standard_normal((n, d))
    U /= np.linalg.norm(U, axis=1, keepdims=True)
    if np.min(1 - np.abs(U @ U.T) + 2 * np.eye(n)) < 1e-6:
        return          # (anti-)parallel rows: issue 9's exact degeneracy, not a range question
    scales = 10.0 ** np.array(data.draw(st.lists(st.floats(-150, 149.5), min_size=n,
                                                 max_size=n)))
    X = U * scales[:, None] / np.sqrt(d)          # every cell ≤ 1e150
    norms = np.linalg.norm(X, axis=1)
    K = ntkhgm.kernel(X, activation="relu", depth=depth)
    ref = relu_ntk_reference(U, U, depth) * norms[:, None] * norms[None, :]
    assert np.all(np.isfinite(K))
    np.testing.assert_allclose(K, ref, rtol=1e-11, atol=0)
