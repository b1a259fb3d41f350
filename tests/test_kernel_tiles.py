"""Tiles, exact degeneracy, every depth in one pass, non-finite values (issues 9, 10, 12, 13).

References: the independent arc-cosine recursion (conftest.relu_ntk_reference) for
relu; otherwise mathematical identities — a duplicate row has the same kernel
row, K(−X, −Y) = K(X, Y), a tile's pairs are the untiled kernel's pairs.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import relu_ntk_reference

import ntkhgm
import ntkhgm.kernels as kernels_mod
from ntkhgm.errors import InputError, NonFiniteKernelError

ACTS = ("relu", "resin", "gelu", "erf")
rng = np.random.default_rng(7)
X = rng.standard_normal((7, 3))
XT = rng.standard_normal((4, 3))


def rel(A, B) -> float:
    return float(np.max(np.abs(A - B)) / np.max(np.abs(B)))


# --- tiles ------------------------------------------------------------------------


@pytest.mark.parametrize("edge", [1, 2, 3, 5])
def test_tiled_relu_equals_independent_reference(edge):
    K = ntkhgm.kernel(X, activation="relu", depth=3, tile=edge)
    assert rel(K, relu_ntk_reference(X, X, 3)) <= 1e-13
    K12 = ntkhgm.kernel(XT, X, activation="relu", depth=3, tile=edge)
    assert rel(K12, relu_ntk_reference(XT, X, 3)) <= 1e-13


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("kind", ["ntk", "nngp"])
def test_tiled_equals_untiled(act, kind):
    full = ntkhgm.kernel(X, activation=act, depth=2, kind=kind)
    cross = ntkhgm.kernel(XT, X, activation=act, depth=2, kind=kind)
    for edge in ((1, 3, 4) if act in ("relu", "erf") else (3,)):
        K = ntkhgm.kernel(X, activation=act, depth=2, kind=kind, tile=edge)
        assert rel(K, full) <= 1e-15
        assert np.array_equal(K, K.T)
        assert rel(ntkhgm.kernel(XT, X, activation=act, depth=2, kind=kind, tile=edge),
                   cross) <= 1e-15


def test_tiled_nt_convention_and_memory_budget():
    kw = dict(activation="erf", depth=2, convention="nt", W_std=1.3, b_std=0.2)
    full = ntkhgm.kernel(X, **kw)
    assert rel(ntkhgm.kernel(X, tile=2, **kw), full) <= 1e-15
    # a budget only just above the process's memory gives small tiles, same K
    from ntkhgm.tiling import MIN_TILE, current_rss, memory_model

    per_pair, reserve = memory_model(("closed", "closed"))
    budget = current_rss() + reserve + 8 * per_pair * MIN_TILE ** 2
    plan, _ = kernels_mod.plan_kernel(np.tile(X, (20, 1)), memory=budget, **kw)
    assert plan.edge < 140 and len(plan.tiles) > 1
    with pytest.raises(InputError, match="too small"):
        kernels_mod.plan_kernel(X, memory="1MiB", **kw)


# --- every depth in one pass (issue 12) -------------------------------------------


@pytest.mark.parametrize("act", ["relu", "resin"])
def test_depth_list_equals_separate_calls_and_costs_one_pass(act, monkeypatch):
    evaluated = []
    real = kernels_mod.dual

    real_pairs = kernels_mod.dual_pairs

    def counting(activation, a, b, c, **kw):
        evaluated.append(np.size(a))
        return real(activation, a, b, c, **kw)

    def counting_pairs(activation, a, b, c, which, **kw):     # σ and σ' of the same pairs
        evaluated.append(np.size(a) * len(which))
        return real_pairs(activation, a, b, c, which, **kw)

    monkeypatch.setattr(kernels_mod, "dual", counting)
    monkeypatch.setattr(kernels_mod, "dual_pairs", counting_pairs)
    Ks = ntkhgm.kernel(X, activation=act, depth=[3, 1, 2])
    one_pass = sum(evaluated)
    evaluated.clear()
    K3 = ntkhgm.kernel(X, activation=act, depth=3)
    assert one_pass == sum(evaluated)  # no dual evaluated twice: the cost of depth 3 alone
    assert sorted(Ks) == [1, 2, 3]
    assert rel(Ks[3], K3) <= 1e-15
    for d in (1, 2):
        assert rel(Ks[d], ntkhgm.kernel(X, activation=act, depth=d)) <= 1e-15
    assert isinstance(K3, np.ndarray)
    assert list(ntkhgm.kernel(X, activation="relu", depth=[0, 2], kind="nngp")) == [0, 2]


def test_bad_depths():
    for bad in ([], [1, -1], [1.5], True, "2"):
        with pytest.raises(InputError, match="depth"):
            ntkhgm.kernel(X, activation="relu", depth=bad)


# --- exact degeneracy (issue 9 item 3) --------------------------------------------


def _with_duplicates(Z):
    # rows 0 and 1 repeated, one of them negated, and an all-zero row
    return np.concatenate([Z, Z[:2], -Z[:1], np.zeros((1, Z.shape[1]))])


@pytest.mark.parametrize("act", ACTS)
def test_duplicate_rows_give_equal_kernel_rows(act):
    Z = _with_duplicates(X[:5])
    n = len(X[:5])
    Ks = ntkhgm.kernel(Z, activation=act, depth=[1, 2, 3, 4])
    Kn = ntkhgm.kernel(Z, activation=act, depth=[1, 2, 3, 4], kind="nngp")
    Kt = ntkhgm.kernel(XT, Z, activation=act, depth=[1, 2, 3, 4])
    for L in (1, 2, 3, 4):
        for K in (Ks[L], Kn[L]):
            scale = np.max(np.abs(K))
            for i, j in ((0, n), (1, n + 1)):
                assert np.max(np.abs(K[i] - K[j])) <= 1e-15 * scale, (act, L, i)
                assert np.max(np.abs(K[:, i] - K[:, j])) <= 1e-15 * scale
                assert abs(K[i, j] - K[i, i]) <= 1e-15 * scale
        assert np.max(np.abs(Kt[L][:, 0] - Kt[L][:, n])) <= 1e-15 * np.max(np.abs(Kt[L]))


@pytest.mark.parametrize("act", ACTS)
def test_negated_inputs_give_the_same_kernel(act):
    Z = _with_duplicates(X[:5])
    Ks = ntkhgm.kernel(Z, activation=act, depth=[1, 2, 3, 4])
    Kneg = ntkhgm.kernel(-Z, activation=act, depth=[1, 2, 3, 4])
    Kt = ntkhgm.kernel(XT, Z, activation=act, depth=[1, 2, 3, 4])
    Ktneg = ntkhgm.kernel(-XT, -Z, activation=act, depth=[1, 2, 3, 4])
    for L in (1, 2, 3, 4):
        assert rel(Kneg[L], Ks[L]) <= 1e-15
        assert rel(Ktneg[L], Kt[L]) <= 1e-15


def test_odd_activation_negated_row_is_negated_kernel_row():
    # erf is odd: K(−x, y) = −K(x, y) in every layer (σ' is even)
    Z = np.concatenate([X[:4], -X[:1]])
    K = ntkhgm.kernel(Z, activation="erf", depth=3)
    assert np.max(np.abs(K[4, :4] + K[0, :4])) <= 1e-15 * np.max(np.abs(K))
    assert abs(K[4, 4] - K[0, 0]) <= 1e-15 * K[0, 0]


def test_issue9_duplicate_rows_resin_depth2():
    Z = np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0], [3.0, 4.0]])
    K = ntkhgm.kernel(Z, activation="resin", depth=2)
    assert np.array_equal(K[0], K[1])


@pytest.mark.parametrize("act", ["relu", "resin"])
def test_near_duplicates_stay_continuous(act):
    # No jump between an exact duplicate and a near one.  The exact value at distance ε
    # differs by O(ε), but σ' of a kinked activation is √(1 − ρ)-sensitive near ρ = 1 and
    # float64 knows 1 − ρ of a near pair only to ~1e-16: the float64 conditioning limit
    # is ~√(1e-16) = 1e-8 relative, which is what continuity can mean here.
    base = X[:4]
    out = []
    for eps in (0.0, 1e-12, 1e-10):
        Z = np.concatenate([base, base[:1] + eps * np.array([[1.0, -1.0, 0.5]])])
        out.append(ntkhgm.kernel(Z, activation=act, depth=3)[4])
    K0 = out[0]
    for row, eps in zip(out[1:], (1e-12, 1e-10), strict=True):
        assert np.max(np.abs(row - K0)) <= (1e3 * eps + 1e-6) * np.max(np.abs(K0))


# --- non-finite values (issue 13) -------------------------------------------------


def test_non_finite_values_name_the_row_pair_and_layer():
    Z = np.array([[1.0, 2.0], [3.0, 1.0]])
    with pytest.raises(NonFiniteKernelError, match=r"layer 0, rows? 0") as info:
        ntkhgm.kernel(Z, activation="relu", depth=1, convention="nt", W_std=1e200)
    assert info.value.layer == 0
    # W² = 1e200 times a layer-1 value of ~1e200 overflows at layer 1
    Z3 = np.array([[1.0, 2.0], [3.0, 1.0], [3.0, 4.0]])
    with pytest.raises(NonFiniteKernelError, match=r"at layer 1, row") as info:
        ntkhgm.kernel(Z3, activation="relu", depth=2, convention="nt", W_std=1e100)
    assert info.value.layer == 1 and info.value.rows is not None


def test_non_finite_in_a_pair_names_both_rows(monkeypatch):
    real = kernels_mod.dual

    def poisoned(activation, a, b, c, **kw):
        out = np.array(real(activation, a, b, c, **kw), dtype=float)
        pairs = (np.asarray(a) != np.asarray(b))
        if kw.get("derivative") and np.any(pairs):
            out[np.flatnonzero(pairs)[-1]] = np.inf
        return out

    real_pairs = kernels_mod.dual_pairs

    def poisoned_pairs(activation, a, b, c, which, **kw):     # σ and σ' of the same pairs
        outs = real_pairs(activation, a, b, c, which, **kw)
        for (derivative, _), out in zip(which, outs, strict=True):
            pairs = (np.asarray(a) != np.asarray(b))
            if derivative and np.any(pairs):
                out[np.flatnonzero(pairs)[-1]] = np.inf
        return outs

    monkeypatch.setattr(kernels_mod, "dual", poisoned)
    monkeypatch.setattr(kernels_mod, "dual_pairs", poisoned_pairs)
    with pytest.raises(NonFiniteKernelError, match=r"at layer 1, X1 row \d+ and X2 row \d+"):
        ntkhgm.kernel(XT, X, activation="relu", depth=2)


def test_parallel_runs_get_enough_tiles():
    from ntkhgm.kernels import TILES_PER_WORKER, balanced_edge

    for n1, n2, sym, workers in ((1000, 1000, True, 2), (4000, 4000, True, 3),
                                 (100, 7, False, 2), (5, 5, True, 8)):
        edge = balanced_edge(n1, n2, sym, workers)
        b1, b2 = -(-n1 // edge), -(-n2 // edge)
        tiles = b1 * (b1 + 1) // 2 if sym else b1 * b2
        assert tiles >= min(TILES_PER_WORKER * workers, (n1 * (n1 + 1) // 2) if sym
                            else n1 * n2)
        if edge > 1:  # the fewest blocks that do
            m = max(n1, n2)
            e = -(-m // (-(-m // edge) - 1))
            c1, c2 = -(-n1 // e), -(-n2 // e)
            assert (c1 * (c1 + 1) // 2 if sym else c1 * c2) < TILES_PER_WORKER * workers
    assert balanced_edge(1000, 1000, True, 1) == 1000


@pytest.mark.parametrize("act", ["resin", "gelu"])
def test_clustered_tiles_equal_untiled_bit_for_bit(act):
    """Clustered rows (pairs at 1 − ρ ≈ 1e-4…1e-2, served by the local solutions at |ρ| = 1
    or the long series): a pair's value does not depend on the tile it lands in."""
    centres = np.random.default_rng(3).standard_normal((3, 4))
    Z = centres[np.arange(12) % 3] + 0.03 * np.random.default_rng(4).standard_normal((12, 4))
    full = ntkhgm.kernel(Z, activation=act, depth=2)
    assert np.array_equal(ntkhgm.kernel(Z, activation=act, depth=2, tile=5), full)
