"""The table of mpmath values the tests read (tests/mpmath_reference.py, data/
mpmath_reference.json): well formed, and mpmath's own output — a sample recomputed with
mpmath at every run, two values per activation, a different sample every day."""

from __future__ import annotations

import datetime
import random

import mpmath as mp
import mpmath_reference as ref
import pytest

SAMPLE_PER_ACTIVATION = 2


def _entries():
    return sorted(ref.load_table().items())


def _parse(key: str):
    name, derivative, *floats = key.split("|")
    return name, derivative == "1", *(float.fromhex(x) for x in floats)


def test_table_is_well_formed():
    entries = _entries()
    assert len(entries) >= 100
    for key, value in entries:
        name, derivative, a, b, c = _parse(key)
        assert (name, derivative) in ref.ACTIVATIONS
        assert a >= 0 and b >= 0 and c * c <= a * b * (1 + 1e-15)
        assert mp.isfinite(mp.mpf(value))
        assert ref.key(name, derivative, a, b, c) == key


def test_a_sample_of_the_table_is_what_mpmath_computes():
    by_activation: dict[tuple[str, bool], list[tuple[str, str]]] = {}
    for key, value in _entries():
        by_activation.setdefault(_parse(key)[:2], []).append((key, value))
    rng = random.Random(datetime.date.today().toordinal())
    sample = [entry for entries in by_activation.values()
              for entry in rng.sample(entries, min(SAMPLE_PER_ACTIVATION, len(entries)))]
    assert len(sample) >= 2 * len(ref.ACTIVATIONS) - 1
    for key, value in sample:
        name, derivative, a, b, c = _parse(key)
        live = ref.compute_dual(name, derivative, a, b, c)
        # relative to the Cauchy–Schwarz scale: a dual near zero is known to that accuracy
        scale = mp.sqrt(ref.compute_dual(name, derivative, a, a, a)
                        * ref.compute_dual(name, derivative, b, b, b))
        assert abs(mp.mpf(value) - live) <= mp.mpf("1e-19") * max(scale, abs(live)), key


@pytest.mark.parametrize("name, derivative", sorted(ref.ACTIVATIONS))
def test_a_value_not_in_the_table_is_computed(monkeypatch, name, derivative):
    """Points the table lacks are computed live (and agree with a closed-form limit: at
    c = 0 the dual factorises into E f(√a z)·E f(√b z))."""
    monkeypatch.setattr(ref, "_TABLE", {})
    monkeypatch.setattr(ref, "RECORD", False)
    a, b = 0.7310585786300049, 1.2345678901234567
    f = ref.ACTIVATIONS[name, derivative][0]

    def mean(x):
        return mp.quad(lambda z: f(mp.sqrt(x) * z) * mp.npdf(z), [-mp.inf, 0, mp.inf])

    assert abs(ref.dual(name, derivative, a, b, 0.0) - mean(a) * mean(b)) <= mp.mpf("1e-20")
