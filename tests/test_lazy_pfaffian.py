"""The Pfaffian system is loaded and verified only when a pair needs it (``auto``).

``series+hgm`` (what ``auto`` picks for ReSin, GELU, ...) sends most pairs to the
Mehler series; only pairs near |ρ| = 1 take a Pfaffian path.  The evaluator gets a
loader instead of a system and calls it on first need; every check still runs
then (content hash and integrability modulo a prime in the parser, the moment check
of :func:`ntkhgm.checks.cross_check_system`).  Decided (duals._holonomic):

- a damaged file is **no error** for a call that does not need the system (its
  values do not depend on the file) and **the same PfaffianFileError as before** for a
  call that does; method ``hgm`` needs it for every call and checks it first;
- the evaluators are keyed on the file's (path, size, mtime, inode): a replaced
  file is read and checked again.

References: the values of the clean shipped files, and the ``quad`` method.
"""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

import ntkhgm
from ntkhgm import checks, duals
from ntkhgm.algebra import cache
from ntkhgm.algebra import pfaffian as pf
from ntkhgm.errors import PfaffianFileError
from ntkhgm.numeric.hgm import HGMEvaluator

# far from |ρ| = 1: the series serves all of them within 256 terms
FAR_A = np.array([1.0, 2.0, 0.5, 1.3])
FAR_B = np.array([1.5, 0.7, 0.5, 0.9])
FAR_RHO = np.array([0.3, -0.6, 0.1, 0.8])
# near |ρ| = 1: a Pfaffian path
NEAR_A, NEAR_B, NEAR_RHO = np.array([1.0, 0.8]), np.array([1.2, 0.8]), np.array([0.9995, -0.999])


def _abc(a, b, rho):
    return a, b, rho * np.sqrt(a * b)


def shipped_text(name: str, derivative: bool) -> str:
    saved = os.environ.pop("NTKHGM_DATA_DIR", None)
    try:
        path = cache.pfaffian_path(name, derivative)
        return path.read_text()
    finally:
        if saved is not None:
            os.environ["NTKHGM_DATA_DIR"] = saved


def install(folder, text: str, name: str):
    path = folder / name
    path.write_text(text)
    os.utime(path, ns=(time.time_ns(), time.time_ns()))
    return path


@pytest.fixture
def setup(tmp_path, monkeypatch):
    """An empty shipped folder, a fresh evaluator memo, and counters of the checks."""
    d = tmp_path / "shipped"
    d.mkdir()
    monkeypatch.setenv("NTKHGM_DATA_DIR", str(d))
    monkeypatch.setenv("NTKHGM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(duals, "_HOLONOMIC_EVALUATORS", {})
    calls = {"load": 0, "moments": 0, "modp": 0}
    load, moments = cache.load_pfaffian, checks.cross_check_system
    modp = pf.integrability_defect_modp

    def count(name, fn):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(cache, "load_pfaffian", count("load", load))
    monkeypatch.setattr(checks, "cross_check_system", count("moments", moments))
    monkeypatch.setattr(pf, "integrability_defect_modp", count("modp", modp))
    monkeypatch.setattr(checks, "_VERIFIED", {})
    monkeypatch.setattr(cache, "_MEMO", {})
    # ReSin's near pairs are served without the system (docs/math.md §9b): switched off
    # here, so that they take the Pfaffian paths these tests are about
    monkeypatch.setattr(HGMEvaluator, "_rectified_near",
                        lambda self, sa, *args: np.full(sa.size, np.nan))
    return d, calls


def _evaluator(name="resin", derivative=False):
    return duals._LAST_EVALUATOR[name, derivative, "auto"]


def test_no_load_when_the_series_suffices(setup):
    data_dir, calls = setup
    install(data_dir, shipped_text("resin", False), "resin.json")
    out = ntkhgm.dual("resin", *_abc(FAR_A, FAR_B, FAR_RHO), method="series+hgm")
    assert calls == {"load": 0, "moments": 0, "modp": 0}
    assert not _evaluator().system_loaded
    ref = ntkhgm.dual("resin", *_abc(FAR_A, FAR_B, FAR_RHO), method="quad")
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-13 * np.abs(ref).max())


def test_kernel_of_far_rows_loads_nothing(setup):
    data_dir, calls = setup
    for derivative in (False, True):
        install(data_dir, shipped_text("resin", derivative),
                "resin.derivative.json" if derivative else "resin.json")
    X = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, -0.8]])       # |ρ| ≤ 0.6 in layer 0
    ntkhgm.kernel(X, activation="resin", depth=1)
    assert calls["load"] == 0
    assert not _evaluator().system_loaded and not _evaluator(derivative=True).system_loaded


def test_near_pairs_of_a_rectified_activation_load_nothing(tmp_path, monkeypatch):
    """ReSin = Y·sin near |ρ| = 1: the analytic part and the wedge (docs/math.md §9b) need
    no Pfaffian system; a damaged file is then no error."""
    d = tmp_path / "shipped"
    d.mkdir()
    install(d, "{ not json", "resin.json")
    monkeypatch.setenv("NTKHGM_DATA_DIR", str(d))
    monkeypatch.setattr(duals, "_HOLONOMIC_EVALUATORS", {})
    monkeypatch.setattr(cache, "_MEMO", {})
    out = ntkhgm.dual("resin", *_abc(NEAR_A, NEAR_B, NEAR_RHO), method="series+hgm")
    assert not _evaluator().system_loaded
    ref = ntkhgm.dual("resin", *_abc(NEAR_A, NEAR_B, NEAR_RHO), method="quad")
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12 * np.abs(ref).max())


def test_first_near_pair_loads_and_checks(setup):
    data_dir, calls = setup
    install(data_dir, shipped_text("resin", False), "resin.json")
    ntkhgm.dual("resin", *_abc(FAR_A, FAR_B, FAR_RHO), method="series+hgm")
    out = ntkhgm.dual("resin", *_abc(NEAR_A, NEAR_B, NEAR_RHO), method="series+hgm")
    assert calls["load"] == 1
    assert calls["moments"] == 1        # σ's moments against the system
    assert calls["modp"] >= 1           # integrability, in the parser
    assert _evaluator().system_loaded
    ref = ntkhgm.dual("resin", *_abc(NEAR_A, NEAR_B, NEAR_RHO), method="quad")
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-12 * np.abs(ref).max())
    # loaded once: the next near call reads nothing
    ntkhgm.dual("resin", *_abc(NEAR_A, NEAR_B, -NEAR_RHO), method="series+hgm")
    assert calls["load"] == 1 and calls["moments"] == 1


@pytest.mark.parametrize("damage", ["{ not json", "gauge"])
def test_damaged_file_refused_only_when_needed(setup, damage):
    data_dir, calls = setup
    good = shipped_text("resin", False)
    if damage == "gauge":       # a valid, integrable, hashed system of g·F: only σ's moments see it
        from test_tamper import X11_POWER, gauge, shipped

        text = gauge(shipped("resin", False), "x11", *X11_POWER).to_json()
    else:
        text = damage
    install(data_dir, text, "resin.json")
    far = ntkhgm.dual("resin", *_abc(FAR_A, FAR_B, FAR_RHO), method="series+hgm")
    with pytest.raises(PfaffianFileError):
        ntkhgm.dual("resin", *_abc(NEAR_A, NEAR_B, NEAR_RHO), method="series+hgm")
    with pytest.raises(PfaffianFileError):     # refused again, not remembered as good
        ntkhgm.dual("resin", *_abc(NEAR_A, NEAR_B, NEAR_RHO), method="series+hgm")
    with pytest.raises(PfaffianFileError):     # hgm checks it before any value
        ntkhgm.dual("resin", *_abc(FAR_A, FAR_B, FAR_RHO), method="hgm")
    # the far values did not depend on the file
    install(data_dir, good, "resin.json")
    clean = ntkhgm.dual("resin", *_abc(FAR_A, FAR_B, FAR_RHO), method="series+hgm")
    np.testing.assert_array_equal(far, clean)


def test_changed_file_is_read_and_checked_again(setup):
    data_dir, calls = setup
    from test_tamper import X11_POWER, gauge, shipped

    good = shipped_text("resin", False)
    path = install(data_dir, good, "resin.json")
    near = _abc(NEAR_A, NEAR_B, NEAR_RHO)
    first = ntkhgm.dual("resin", *near, method="series+hgm")
    assert calls["moments"] == 1
    # replaced by a tampered system (new inode, size and mtime): refused
    tmp = path.with_suffix(".tmp")
    tmp.write_text(gauge(shipped("resin", False), "x11", *X11_POWER).to_json())
    os.replace(tmp, path)
    with pytest.raises(PfaffianFileError, match="does not match the moments"):
        ntkhgm.dual("resin", *near, method="series+hgm")
    # and back: read and checked again, same values
    install(data_dir, good, "resin.json")
    again = ntkhgm.dual("resin", *near, method="series+hgm")
    np.testing.assert_array_equal(first, again)
    assert calls["moments"] == 3
    # one evaluator per (activation, σ/σ', tol, mode): older files' evaluators are dropped
    keys = [k for k in duals._HOLONOMIC_EVALUATORS if k[:2] == ("resin", False)]
    assert len(keys) == 1


def test_same_size_and_mtime_new_inode_is_read_again(setup):
    data_dir, calls = setup
    """A file replaced within one mtime tick by one of the same size: the inode tells."""
    good = shipped_text("resin", False)
    path = install(data_dir, good, "resin.json")
    st = path.stat()
    near = _abc(NEAR_A, NEAR_B, NEAR_RHO)
    ntkhgm.dual("resin", *near, method="series+hgm")
    # same length, one byte changed inside a string that the hash covers
    i = good.index('"activation"')
    bad = good[:i] + good[i:].replace("resin", "resix", 1)
    assert len(bad) == len(good)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(bad)
    os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(tmp, path)
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(PfaffianFileError):
        ntkhgm.dual("resin", *near, method="series+hgm")
