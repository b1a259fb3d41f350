"""Benchmarks behind ``ntkhgm bench`` (issue 5).

``paper``
    The seed's ReSin experiment: NTK regression on a train/test split, timed for
    each dual-activation method (Gauss–Hermite at two degrees, HGM one path per
    point, HGM all points at once), with kernel errors against a quadrature
    reference on a subsample and inference errors.
``accuracy``
    Error versus time for one kernel workload: Gauss–Hermite over a range of
    degrees, HGM over a range of tolerances, the closed form where one exists.

Every quantity is defined in README.md ("Benchmarks") and benchmarks/README.md.
The functions here return plain dicts/lists (JSON-ready) and never print; the
command line (:mod:`ntkhgm.cli.bench_cmd`) formats them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .atomic import atomic_write_text
from .errors import InputError, SingularKernelError
from .regression import r2_score

Status = Callable[[str], None]

DEFAULT_TRAIN = "data/diabetes_train.csv"
DEFAULT_TEST = "data/diabetes_test.csv"
DEFAULT_TARGET = "progression"
POINTWISE = "hgm-pointwise"

# ----------------------------------------------------------------------------- helpers


def default_data() -> tuple[str, str]:
    """The shipped split: ``data/`` in the working directory, else the package's copy."""
    if Path(DEFAULT_TRAIN).exists() and Path(DEFAULT_TEST).exists():
        return DEFAULT_TRAIN, DEFAULT_TEST
    from .paths import example_data_dir

    root = example_data_dir()
    train, test = root / Path(DEFAULT_TRAIN).name, root / Path(DEFAULT_TEST).name
    if train.exists() and test.exists():
        return str(train), str(test)
    return DEFAULT_TRAIN, DEFAULT_TEST  # the loader names the missing file


def _noop(_: str) -> None:
    pass


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def kernel_errors(K: list[np.ndarray], ref: list[np.ndarray]) -> tuple[float, float]:
    """(max relative, relative Frobenius) error of blocks K against blocks ref.

    max relative = max_ij |K_ij − R_ij| / max_ij |R_ij|,
    relative Frobenius = ‖K − R‖_F / ‖R‖_F, both over all blocks together.
    """
    diff = np.concatenate([np.ravel(k - r) for k, r in zip(K, ref, strict=True)])
    rv = np.concatenate([np.ravel(r) for r in ref])
    return (float(np.max(np.abs(diff)) / np.max(np.abs(rv))),
            float(np.linalg.norm(diff) / np.linalg.norm(rv)))


def relative_rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """‖pred − truth‖₂ / ‖truth‖₂ = RMSE(pred, truth) / RMS(truth)."""
    return float(np.linalg.norm(pred - truth) / np.linalg.norm(truth))


def machine_info() -> dict:
    return {"python": platform.python_version(), "numpy": np.__version__,
            "machine": platform.machine(), "processor": platform.processor() or None,
            "cpus": os.cpu_count(), "platform": platform.platform(),
            "load_average_1_5_15min": _loadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _json_ready(obj):
    if isinstance(obj, dict):
        return {k: _json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_ready(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(_json_ready(obj), indent=1, allow_nan=False) + "\n")


def write_rows_csv(path: str | os.PathLike, rows: list[dict], columns: list[str]) -> Path:
    """Rows as CSV; floats with round-trip precision, None/NaN as an empty cell."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        cells = []
        for col in columns:
            v = row.get(col)
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                cells.append("")
            elif isinstance(v, float | np.floating):
                cells.append(repr(float(v)))
            else:
                cells.append(str(v))
        w.writerow(cells)
    return atomic_write_text(path, buf.getvalue())


def gh_degree_problem(degree: int) -> str | None:
    """Why the Gauss–Hermite rule of this degree cannot be used, or None.

    A rule with non-finite nodes or weights would make a kernel fail deep inside
    (numpy's ``hermgauss`` did above degree ~370; ntkhgm now uses scipy's).
    """
    import warnings

    from .numeric.gauss_hermite import hermgauss

    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t, w = hermgauss(int(degree))
    if np.all(np.isfinite(t)) and np.all(np.isfinite(w)):
        return None
    return (f"the Gauss–Hermite rule of degree {degree} has non-finite weights "
            "(scipy.special.roots_hermite)")


# ----------------------------------------------------------------------------- hgm per point


def _pointwise_evaluate(act, a, b, c, derivative, **options):
    """One call of the hgm method per point: one Pfaffian path at a time (the seed's row)."""
    from .duals import METHODS

    hgm = METHODS["hgm"].evaluate
    a, b, c = (np.ravel(x) for x in np.broadcast_arrays(a, b, c))
    out = np.empty(a.size)
    for i in range(a.size):
        out[i] = hgm(act, a[i:i + 1], b[i:i + 1], c[i:i + 1], derivative, **options)[0]
    return out


@contextmanager
def pointwise_method() -> Iterator[str]:
    """Register the dual method ``hgm-pointwise`` for the duration of the block.

    It is the hgm method called on one (a, b, c) at a time from a Python loop —
    the seed's "hgm" row, as opposed to the default all-at-once evaluation.  It
    is removed again afterwards so that method listings elsewhere do not change.
    """
    from .duals import METHODS, DualMethod, register_method

    previous = METHODS.get(POINTWISE)
    register_method(DualMethod(POINTWISE, "hgm called on one point at a time (benchmark only)",
                               METHODS["hgm"].available, _pointwise_evaluate))
    try:
        yield POINTWISE
    finally:
        if previous is None:
            METHODS.pop(POINTWISE, None)
        else:
            METHODS[POINTWISE] = previous


# ----------------------------------------------------------------------------- paper


@dataclass
class PaperConfig:
    """Settings of ``ntkhgm bench paper`` (defaults: the documented default run)."""

    train: str = DEFAULT_TRAIN
    test: str = DEFAULT_TEST
    target: str = DEFAULT_TARGET
    activation: str = "resin"
    depth: int = 3
    gh_degree: int = 100
    subsample: int = 10
    """Training rows of the quadrature reference (test rows: max(1, subsample // 2))."""
    pointwise: int = 40
    """Training rows for hgm one-path-per-point (test rows: half); 0 = all rows."""
    ridge: float = 1.0
    seed: int = 0
    max_train: int | None = None
    """Use only this many training rows (and max_test test rows); None = all."""
    max_test: int | None = None
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides) -> PaperConfig:
        """Small sizes for CI: 30 train / 15 test rows, depth 2, tiny subsamples."""
        base = dict(depth=2, gh_degree=50, subsample=3, pointwise=8, max_train=30,
                    max_test=15, quick=True)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


PAPER_COLUMNS = ["method", "dual_method", "options", "n_train", "n_test", "train_time_s",
                 "inference_time_s", "kernel_time_train_s", "fit_time_s",
                 "kernel_time_test_s", "predict_time_s", "timed_on", "kernel_max_rel_err",
                 "kernel_rel_fro_err", "pred_rel_rmse_vs_targets", "r2_test",
                 "pred_rel_diff_vs_reference"]


def _subsets(n: int, size: int, rng) -> np.ndarray:
    return rng.permutation(n)[: min(size, n)] if size > 0 else np.arange(n)


def _load(cfg: PaperConfig):
    from .io import load_table, load_test_table

    tr = load_table(cfg.train, target=cfg.target)
    te = load_test_table(cfg.test, tr, cfg.target)
    if te.y is None:
        raise InputError(f"{cfg.test}: the test file needs the target column {cfg.target!r}")
    return tr, te


def run_paper(cfg: PaperConfig, status: Status = _noop) -> dict:
    """Run the paper benchmark; returns ``{"config", "data", "rows", ...}`` (JSON-ready)."""
    from .duals import as_activation, available_methods
    from .kernels import kernel
    from .regression import solve_kernel_system

    act = as_activation(cfg.activation)
    for name, v, lo in (("depth", cfg.depth, 0), ("gh_degree", cfg.gh_degree, 1),
                        ("subsample", cfg.subsample, 1), ("pointwise", cfg.pointwise, 0)):
        if int(v) != v or v < lo:
            raise InputError(f"{name} must be an integer >= {lo}, got {v!r}")
    load_start = _loadavg()
    tr, te = _load(cfg)
    rng = np.random.default_rng(cfg.seed)
    # the rows used: all, or (quick) a fixed seeded subset of each file
    itr = np.sort(_subsets(len(tr.X), cfg.max_train or 0, rng))
    ite = np.sort(_subsets(len(te.X), cfg.max_test or 0, rng))
    Xtr, ytr, Xte, yte = tr.X[itr], tr.y[itr], te.X[ite], te.y[ite]
    ntr, nte = len(Xtr), len(Xte)
    if ntr < 2:
        raise InputError("the benchmark needs at least 2 training rows")
    # one seeded ordering of each set; the pointwise subsample is a prefix of it and
    # the reference subsample a prefix of that, so every subsample is nested
    order_tr, order_te = rng.permutation(ntr), rng.permutation(nte)
    n_pw = ntr if cfg.pointwise == 0 else min(cfg.pointwise, ntr)
    n_pw_te = nte if cfg.pointwise == 0 else min(max(1, cfg.pointwise // 2), nte)
    m = min(cfg.subsample, n_pw)
    m_te = min(max(1, cfg.subsample // 2), n_pw_te)
    S, T = order_tr[:m], order_te[:m_te]
    P, Q = order_tr[:n_pw], order_te[:n_pw_te]

    problem = gh_degree_problem(cfg.gh_degree)
    if problem:
        raise InputError(f"--gh-degree {cfg.gh_degree}: {problem}; use a smaller degree")
    hgm_ok = all("hgm" in available_methods(act, d) for d in (False, True))
    closed_ok = all("closed" in available_methods(act, d) for d in (False, True))
    degrees = [25] + ([cfg.gh_degree] if cfg.gh_degree != 25 else [])
    methods: list[tuple[str, str, dict]] = [(f"gh-{d}", "gh", {"degree": d}) for d in degrees]
    if hgm_ok:
        methods += [("hgm one-path-per-point", POINTWISE, {}),
                    ("series+hgm all-at-once", "series+hgm", {})]
    if closed_ok:
        methods.append(("closed", "closed", {}))

    kw = dict(activation=act, depth=cfg.depth)

    def solve(K, y):
        """α, or None where K + λI is not positive definite (an inaccurate kernel can be)."""
        try:
            return solve_kernel_system(K, y, cfg.ridge)
        except SingularKernelError:
            return None

    def regress(method, opts, X1, y1, X2):
        K, t_k = _timed(lambda: kernel(X1, method=method, **kw, **opts))
        alpha, t_fit = _timed(lambda: solve(K, y1))
        Kt, t_kt = _timed(lambda: kernel(X2, X1, method=method, **kw, **opts))
        pred, t_pred = _timed(lambda: None if alpha is None else Kt @ alpha)
        return K, Kt, pred, (t_k, t_fit, t_kt, t_pred)

    results = {}
    warmup = {}
    with pointwise_method():
        # one-off per-process set-up (Pfaffian loading, evaluator construction,
        # quadrature nodes) is done here, on two points, and not timed below
        for label, method, opts in methods + [("quad", "quad", {})]:
            status(f"warm-up: {label}")
            _, warmup[label] = _timed(lambda method=method, opts=opts: kernel(
                Xtr[:2], method=method, **kw, **opts))
        for label, method, opts in methods:
            sub = method == POINTWISE and n_pw < ntr
            status(f"{label}: train {n_pw if sub else ntr} × test {n_pw_te if sub else nte}")
            if sub:
                X1, y1, X2, pos_S, pos_T = Xtr[P], ytr[P], Xte[Q], np.arange(m), np.arange(m_te)
            else:
                X1, y1, X2, pos_S, pos_T = Xtr, ytr, Xte, S, T
            K, Kt, pred, times = regress(method, opts, X1, y1, X2)
            results[label] = dict(method=method, opts=opts, sub=sub, times=times,
                                  pred=None if sub else pred, full=None if sub else [K, Kt],
                                  K_S=K[np.ix_(pos_S, pos_S)], Kt_TS=Kt[np.ix_(pos_T, pos_S)])
        status(f"reference: quad on {m} train × {m_te} test rows")
        (Kq, Ktq), t_ref = _timed(lambda: (kernel(Xtr[S], method="quad", **kw),
                                           kernel(Xte[T], Xtr[S], method="quad", **kw)))
    pred_ref = Ktq @ solve_kernel_system(Kq, ytr[S], cfg.ridge)  # the reference must fit
    status("defaults: KernelRegressor(input_scale='auto', ridge='auto'), centred targets")
    defaults = run_defaults(act, cfg.depth, Xtr, ytr, Xte, yte)

    rows = []
    if not closed_ok:
        rows.append(dict(method="closed", dual_method="closed", options="",
                         note=f"no closed form for {act.name}"))
    scale_pw = _pair_count(ntr, ntr) / _pair_count(n_pw, n_pw)
    scale_pw_te = _pair_count(nte, ntr, symmetric=False) / _pair_count(n_pw_te, n_pw,
                                                                       symmetric=False)
    for label, r in results.items():
        t_k, t_fit, t_kt, t_pred = r["times"]
        emax, efro = kernel_errors([r["K_S"], r["Kt_TS"]], [Kq, Ktq])
        alpha_S = solve(r["K_S"], ytr[S])
        notes = [f"K + λI not positive definite ({where}): no predictions"
                 for where, bad in (("full size", not r["sub"] and r["pred"] is None),
                                    ("subsample", alpha_S is None)) if bad]
        row = dict(method=label, dual_method=r["method"],
                   options=" ".join(f"{k}={v}" for k, v in r["opts"].items()),
                   n_train=n_pw if r["sub"] else ntr, n_test=n_pw_te if r["sub"] else nte,
                   train_time_s=t_k + t_fit, inference_time_s=t_kt + t_pred,
                   kernel_time_train_s=t_k, fit_time_s=t_fit, kernel_time_test_s=t_kt,
                   predict_time_s=t_pred, timed_on="subsample" if r["sub"] else "full",
                   kernel_max_rel_err=emax, kernel_rel_fro_err=efro,
                   pred_rel_rmse_vs_targets=(None if r["pred"] is None
                                             else relative_rmse(r["pred"], yte)),
                   r2_test=None if r["pred"] is None else r2_score(yte, r["pred"]),
                   pred_rel_diff_vs_reference=(None if alpha_S is None else
                                               relative_rmse(r["Kt_TS"] @ alpha_S, pred_ref)))
        if r["sub"]:
            # the kernel work grows with the number of dual evaluations (pairs)
            row["train_time_est_full_s"] = t_k * scale_pw + t_fit
            row["inference_time_est_full_s"] = t_kt * scale_pw_te + t_pred
            row["note"] = (f"timed on a {n_pw}-row train / {n_pw_te}-row test subsample; "
                           "full-size times extrapolated by the number of dual evaluations")
        if notes:
            row["note"] = "; ".join(([row["note"]] if "note" in row else []) + notes)
        rows.append(row)
    full = [r for r in rows if r.get("timed_on") == "full" and results[r["method"]]["pred"]
            is not None]
    return dict(
        benchmark="paper",
        config=asdict(cfg),
        data=dict(train=cfg.train, test=cfg.test, target=cfg.target, n_train=ntr, n_test=nte,
                  n_features=Xtr.shape[1], train_rows=itr.tolist() if cfg.max_train else "all",
                  test_rows=ite.tolist() if cfg.max_test else "all"),
        activation=act.name, kind="ntk", convention="arora",
        reference=dict(method="quad", n_train=m, n_test=m_te, time_s=t_ref,
                       train_rows=S.tolist(), test_rows=T.tolist()),
        pointwise=dict(n_train=n_pw, n_test=n_pw_te, subsample=n_pw < ntr),
        warmup_s=warmup,
        full_kernel_differences=_pairwise(full, results),
        defaults=defaults,
        seed_setting=_seed_setting(rows, cfg.ridge),
        machine=machine_info(),
        load_average_at_start=load_start,
        rows=rows,
    )


def run_defaults(act, depth: int, Xtr, ytr, Xte, yte) -> dict:
    """Test R² of the regression with ntkhgm's defaults (issue 15), method auto.

    Input scale auto (mean squared row norm 1 on the training rows), centred
    targets, λ chosen by leave-one-out over 10^k·mean(diag K), k = −6, −5.5, …, 2.
    """
    from .regression import KernelRegressor

    model = KernelRegressor(activation=act, depth=depth)
    _, t_fit = _timed(lambda: model.fit(Xtr, ytr))
    pred, t_pred = _timed(lambda: model.predict(Xte))
    return dict(input_scale="auto", centred_targets=True, ridge="auto", method="auto",
                ridge_chosen=model.ridge_, ridge_chosen_rel_mean_diag=model.ridge_ / float(
                    np.mean(model.K_train_diag_)), loo_mse=model.loo_error_,
                r2_test=r2_score(yte, pred), pred_rel_rmse_vs_targets=relative_rmse(pred, yte),
                train_time_s=t_fit, inference_time_s=t_pred)


def _seed_setting(rows: list[dict], ridge: float) -> dict | None:
    """Test R² in the seed's setting (raw inputs and targets, the given λ), best method."""
    by = {r["method"]: r for r in rows if r.get("r2_test") is not None}
    gh = sorted((m for m in by if m.startswith("gh-")), key=lambda m: int(m[3:]))
    for m in ["closed", "series+hgm all-at-once"] + gh[::-1]:
        if m in by:
            return dict(input_scale="none", centred_targets=False, ridge=ridge, method=m,
                        r2_test=by[m]["r2_test"])
    return None


def _pair_count(n1: int, n2: int, symmetric: bool = True) -> float:
    """Dual evaluations per layer: off-diagonal pairs (+ diagonal) of K(X1, X2)."""
    return n1 * (n1 - 1) / 2 + n1 if symmetric else n1 * n2 + n1 + n2


def _pairwise(full_rows: list[dict], results: dict) -> list[dict]:
    """Differences between the full-size results of every two methods.

    The seed reports such differences ("kernel error gh–hgm …"): here the max
    relative and relative Frobenius difference of the full train×train and
    test×train kernels together, and the relative difference of the predictions.
    """
    out = []
    for i, a in enumerate(full_rows):
        for b in full_rows[i + 1:]:
            ra, rb = results[a["method"]], results[b["method"]]
            emax, efro = kernel_errors(ra["full"], rb["full"])
            out.append(dict(a=a["method"], b=b["method"], kernel_max_rel_diff=emax,
                            kernel_rel_fro_diff=efro,
                            pred_rel_diff=relative_rmse(ra["pred"], rb["pred"])))
    return out


def write_paper(result: dict, outdir: str | os.PathLike) -> list[Path]:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    cols = PAPER_COLUMNS + ["train_time_est_full_s", "inference_time_est_full_s", "note"]
    return [write_rows_csv(out / "bench_paper.csv", result["rows"], cols),
            write_json(out / "bench_paper.json", result)]


# ----------------------------------------------------------------------------- accuracy


@dataclass
class AccuracyConfig:
    """Settings of ``ntkhgm bench accuracy``."""

    activation: str = "resin"
    depth: int = 2
    n_points: int = 16
    dim: int = 5
    seed: int = 0
    gh_degrees: list[int] = field(default_factory=lambda: [10, 15, 25, 40, 60, 100, 150,
                                                           250, 400])
    hgm_tols: list[float] = field(default_factory=lambda: [1e-4, 1e-6, 1e-8, 1e-10, 1e-12,
                                                           1e-13])
    min_time_s: float = 0.2
    """Repeat a fast computation until this much time is spent (≤ 5 runs); report the min."""
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides) -> AccuracyConfig:
        base = dict(n_points=5, gh_degrees=[10, 25, 100, 400], hgm_tols=[1e-4, 1e-8, 1e-13],
                    min_time_s=0.0, quick=True)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


ACCURACY_COLUMNS = ["method", "parameter", "value", "time_s", "max_rel_err", "rel_fro_err",
                    "reference", "note"]


def accuracy_points(cfg: AccuracyConfig) -> np.ndarray:
    """The fixed workload: n Gaussian points in R^dim (seeded)."""
    return np.random.default_rng(cfg.seed).standard_normal((cfg.n_points, cfg.dim))


def _best_time(fn, min_time: float):
    out, best = _timed(fn)
    spent, runs = best, 1
    while spent < min_time and runs < 5:
        _, t = _timed(fn)
        best, spent, runs = min(best, t), spent + t, runs + 1
    return out, best


def run_accuracy(cfg: AccuracyConfig, status: Status = _noop) -> dict:
    """Error versus time of depth-L NTKs on a fixed point set, for each method and setting."""
    from .duals import as_activation, available_methods
    from .kernels import kernel

    act = as_activation(cfg.activation)
    if cfg.n_points < 2 or cfg.depth < 1:
        raise InputError("the accuracy workload needs at least 2 points and depth >= 1")
    X = accuracy_points(cfg)
    kw = dict(activation=act, depth=cfg.depth)
    avail = {m for m in ("closed", "series+hgm") if all(
        m in available_methods(act, d) for d in (False, True))}
    runs: list[tuple[str, str, object, dict]] = [
        ("gh", "degree", d, {"degree": int(d)}) for d in cfg.gh_degrees]
    if "series+hgm" in avail:
        runs += [("series+hgm", "tol", t, {"tol": float(t)}) for t in cfg.hgm_tols]
    if "closed" in avail:
        runs.append(("closed", "", None, {}))
        ref_name = "closed"
    else:
        ref_name = "quad"
    status(f"reference: {ref_name}")
    ref, t_ref = _timed(lambda: kernel(X, method=ref_name, **kw))
    rows = []
    warmed = set()
    for method, pname, pval, opts in runs:
        problem = gh_degree_problem(pval) if method == "gh" else None
        if problem:
            rows.append(dict(method=method, parameter=pname, value=pval, time_s=None,
                             max_rel_err=None, rel_fro_err=None, reference=ref_name,
                             note=f"skipped: {problem}"))
            continue
        if method not in warmed:  # one-off set-up (Pfaffian, evaluator) is not timed
            kernel(X[:2], method=method, **kw, **opts)
            warmed.add(method)
        status(f"{method} {pname} {pval}" if pname else method)
        K, t = _best_time(lambda method=method, opts=opts: kernel(X, method=method, **kw, **opts),
                          cfg.min_time_s)
        emax, efro = kernel_errors([K], [ref])
        rows.append(dict(method=method, parameter=pname, value=pval, time_s=t,
                         max_rel_err=emax, rel_fro_err=efro, reference=ref_name))
    if ref_name == "quad":
        rows.append(dict(method="quad", parameter="reference", value=None, time_s=t_ref,
                         max_rel_err=0.0, rel_fro_err=0.0, reference=ref_name))
    return dict(benchmark="accuracy", config=asdict(cfg), activation=act.name,
                workload=f"depth-{cfg.depth} NTK (arora) of {cfg.n_points} Gaussian points "
                         f"in R^{cfg.dim} (seed {cfg.seed}), {cfg.n_points}×{cfg.n_points}",
                reference=dict(method=ref_name, time_s=t_ref),
                skipped=([] if "series+hgm" in avail
                         else [f"hgm: no Pfaffian system for {act.name}"]),
                machine=machine_info(), rows=rows)


ERROR_FLOOR = 1e-17
"""Errors below this (exact zeros: the reference itself) are drawn at this value."""


def plot_accuracy(result: dict, path: str | os.PathLike) -> Path:
    """Log-log error-versus-time PNG, one curve per method (needs matplotlib)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.0), dpi=110)
    styles = {"gh": ("o-", "C0", "Gauss–Hermite (degree)"),
              "series+hgm": ("s-", "C3", "series+hgm all-at-once (tol)"),
              "closed": ("D", "C2", "closed form"), "quad": ("^", "C7", "quadrature")}
    for method, (fmt, color, label) in styles.items():
        rows = [r for r in result["rows"]
                if r["method"] == method and r["max_rel_err"] is not None]
        if not rows:
            continue
        t = np.array([r["time_s"] for r in rows])
        e = np.maximum([r["max_rel_err"] for r in rows], ERROR_FLOOR)
        if method == result["reference"]["method"]:
            label += " — the reference"
        ax.plot(t, e, fmt, color=color, label=label, markersize=5)
        for r, x, y in zip(rows, t, e, strict=True):
            if r["value"] is not None and r["parameter"] in ("degree", "tol"):
                text = f"{r['value']:g}" if r["parameter"] == "tol" else str(r["value"])
                ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, 4),
                            fontsize=7, color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("max relative error  max|K − K_ref| / max|K_ref|")
    ax.set_title(f"{result['activation']}: {result['workload']}\n"
                 f"reference: {result['reference']['method']}; "
                 f"errors < {ERROR_FLOOR:g} drawn at {ERROR_FLOOR:g}", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    from .atomic import atomic_write

    return atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def write_accuracy(result: dict, outdir: str | os.PathLike,
                   plot: bool = True) -> tuple[list[Path], str | None]:
    """CSV (and PNG when matplotlib is importable); returns (paths, note about the plot)."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"bench_accuracy_{result['activation']}"
    paths = [write_rows_csv(out / f"{name}.csv", result["rows"], ACCURACY_COLUMNS)]
    if not plot:
        return paths, None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return paths, ('matplotlib is not installed, so no plot was written; install it with '
                       'pip install "ntkhgm[plot]"')
    paths.append(plot_accuracy(result, out / f"{name}.png"))
    return paths, None
