"""Command group ``bench``: ``bench paper`` and ``bench accuracy`` (issue 5).

Tables go to stdout, the files written and notes to stderr; a progress line
goes to stderr only when it is a terminal and ``--quiet`` is not given.  Result
files are written atomically into the output folder.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import main
from .kernel_cmds import _one_line_warnings, _stderr, _stdout


@contextmanager
def _status(quiet: bool) -> Iterator[Callable[[str], None]]:
    """A one-line rich status on stderr (a no-op when quiet or not a terminal)."""
    if quiet or not sys.stderr.isatty():
        yield lambda _msg: None
        return
    bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                   console=_stderr(), transient=True)
    with bar:
        task = bar.add_task("starting", total=None)
        yield lambda msg: bar.update(task, description=msg)


def _fmt(x, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "NA"
    return format(x, spec)


@main.group("bench")
def bench() -> None:
    """Benchmarks: the seed's ReSin table (paper) and error versus time (accuracy)."""


@bench.command("paper")
@click.option("--data", nargs=2, metavar="TRAIN.csv TEST.csv", default=None,
              help="Train and test CSV files [default: data/diabetes_train.csv "
                   "data/diabetes_test.csv, the shipped fixed split].")
@click.option("--target", default=None,
              help="Label column (name or 0-based index) [default: progression].")
@click.option("--activation", "-a", default="resin", show_default=True,
              help="Activation (the seed's experiment uses ReSin).")
@click.option("--depth", "-L", type=click.IntRange(min=0), default=None,
              help="Hidden layers L of the NTK [default: 3; --quick: 2].")
@click.option("--gh-degree", type=click.IntRange(1, 1000), default=None,
              help="Second Gauss–Hermite degree, besides 25 [default: 100; --quick: 50].")
@click.option("--subsample", type=click.IntRange(min=1), default=None,
              help="Training rows of the quadrature reference; test rows: half of it "
                   "[default: 10; --quick: 3].")
@click.option("--pointwise", type=click.IntRange(min=0), default=None,
              help="Training rows for hgm one-path-per-point, test rows: half of it; "
                   "0 = all rows (slow) [default: 40; --quick: 8].")
@click.option("--ridge", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="Ridge λ of the kernel regression.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the subsample choice.")
@click.option("--quick", is_flag=True,
              help="Small sizes for CI: 30 train / 15 test rows, depth 2, tiny subsamples.")
@click.option("--quiet", "-q", is_flag=True, help="No progress line.")
@click.option("-o", "--output", "outdir", metavar="DIR", default=".", show_default=True,
              help="Folder for bench_paper.csv and bench_paper.json (created if needed).")
def paper_cmd(data, target, activation, depth, gh_degree, subsample, pointwise, ridge, seed,
              quick, quiet, outdir) -> None:
    """The seed's ReSin table: training/inference time and errors of each method.

    Methods: Gauss–Hermite degree 25 and --gh-degree, hgm one-path-per-point
    (on a subsample unless --pointwise 0), hgm all-at-once (the default path);
    reference: quadrature on a subsample.  Definitions: README.md, "Benchmarks".
    """
    from .. import bench as bm

    train, test = data if data else bm.default_data()
    if target is None:
        if data:
            raise click.UsageError("--target is required with --data")
        target = bm.DEFAULT_TARGET
    given = dict(depth=depth, gh_degree=gh_degree, subsample=subsample, pointwise=pointwise)
    common = dict(train=train, test=test, target=target, activation=activation, ridge=ridge,
                  seed=seed)
    if quick:
        cfg = bm.PaperConfig.quick_config(**common, **given)
    else:
        cfg = bm.PaperConfig(**common, **{k: v for k, v in given.items() if v is not None})
    with _one_line_warnings(), _status(quiet) as status:
        result = bm.run_paper(cfg, status)
        paths = bm.write_paper(result, outdir)
    _print_paper(result)
    click.echo("ntkhgm: wrote " + ", ".join(str(p) for p in paths), err=True)


def _print_paper(result: dict) -> None:
    d, ref = result["data"], result["reference"]
    cfg = result["config"]
    console = _stdout()
    console.print(
        f"{result['kind'].upper()} regression, {result['activation']}, depth {cfg['depth']}, "
        f"ridge {cfg['ridge']:g} ({result['convention']}): {d['n_train']} train / "
        f"{d['n_test']} test rows of {d['train']} / {d['test']}, target {d['target']}"
        + (" [--quick]" if cfg["quick"] else ""))
    table = Table()
    for col in ("method", "training (s)", "inference (s)", "K max rel. err", "K rel. Frob. err",
                "rel. RMSE vs y", "R²", "pred. vs ref."):
        table.add_column(col, justify="left" if col == "method" else "right",
                         no_wrap=col == "method")
    for r in result["rows"]:
        if "train_time_s" not in r:
            table.add_row(r["method"], "NA", "NA", "", "", "", "", "")
            continue
        tt, ti = _fmt(r["train_time_s"]), _fmt(r["inference_time_s"])
        if r["timed_on"] == "subsample":
            tt = f"~{_fmt(r['train_time_est_full_s'])}*"
            ti = f"~{_fmt(r['inference_time_est_full_s'])}*"
        table.add_row(r["method"], tt, ti, _fmt(r["kernel_max_rel_err"], ".2e"),
                      _fmt(r["kernel_rel_fro_err"], ".2e"),
                      _fmt(r["pred_rel_rmse_vs_targets"], ".5f"), _fmt(r["r2_test"], ".4f"),
                      _fmt(r["pred_rel_diff_vs_reference"], ".2e"))
    console.print(table)
    console.print(
        f"training = kernel train×train + fit; inference = kernel test×train + predict. "
        f"K errors: the kernels on a subsample of {ref['n_train']} train × {ref['n_test']} "
        f"test rows against quadrature ({ref['time_s']:.1f} s); rel. RMSE vs y: "
        f"‖pred − y_test‖/‖y_test‖; R²: 1 − SS_res/SS_tot on the test rows (seed's "
        f"setting: raw inputs and targets, ridge {cfg['ridge']:g}); pred. vs ref.: the "
        f"subsample's regression, "
        f"‖pred − pred_quad‖/‖pred_quad‖. Definitions: README.md, Benchmarks.")
    for r in result["rows"]:
        if r.get("timed_on") == "subsample":
            console.print(
                f"* {r['method']} is slow, so it was run on a {r['n_train']}-row train / "
                f"{r['n_test']}-row test subsample: measured {_fmt(r['train_time_s'])} s / "
                f"{_fmt(r['inference_time_s'])} s there; ~ = extrapolated to the full size by "
                f"the number of dual evaluations. Its rel. RMSE vs y is NA "
                f"(use --pointwise 0 to run it on all rows).")
    dflt, seed = result["defaults"], result.get("seed_setting")
    console.print(
        f"R² on the test rows: defaults (input scale auto, centred targets, ridge by "
        f"leave-one-out: λ = {dflt['ridge_chosen']:.4g} = {dflt['ridge_chosen_rel_mean_diag']:.3g}"
        f"·mean diag K) {dflt['r2_test']:.4f}"
        + (f"; the seed's setting (raw inputs and targets, ridge {seed['ridge']:g}, "
           f"{seed['method']}) {seed['r2_test']:.4f}" if seed else "") + ".")
    for r in result["rows"]:
        if r.get("timed_on") == "full" and r.get("note"):
            console.print(f"{r['method']}: {r['note']}.")
    for note in (r.get("note") for r in result["rows"] if "train_time_s" not in r):
        console.print(f"closed: NA ({note}).")


@bench.command("accuracy")
@click.option("--activation", "-a", required=True, help="Activation name (see `activations`).")
@click.option("--depth", "-L", type=click.IntRange(min=1), default=2, show_default=True,
              help="Hidden layers L of the NTK workload.")
@click.option("--points", "n_points", type=click.IntRange(min=2), default=None,
              help="Number of fixed Gaussian points (d = 5, seed 0) [default: 16; --quick: 5].")
@click.option("--quick", is_flag=True, help="Small sizes for CI: 5 points, fewer settings.")
@click.option("--quiet", "-q", is_flag=True, help="No progress line.")
@click.option("-o", "--output", "outdir", metavar="DIR", default=".", show_default=True,
              help="Folder for bench_accuracy_<activation>.csv and .png (created if needed).")
def accuracy_cmd(activation, depth, n_points, quick, quiet, outdir) -> None:
    """Error versus time of one NTK workload: gh degrees 10…400, hgm tol 1e-4…1e-13, closed.

    Writes a CSV and, with matplotlib installed (pip install "ntkhgm[plot]"),
    a log-log PNG with one curve per method.
    """
    from ..bench import AccuracyConfig, run_accuracy, write_accuracy
    from ..duals import as_activation

    act = as_activation(activation)
    opts = dict(activation=act.name, depth=depth, n_points=n_points)
    cfg = (AccuracyConfig.quick_config(**opts) if quick
           else AccuracyConfig(**{k: v for k, v in opts.items() if v is not None}))
    with _one_line_warnings(), _status(quiet) as status:
        result = run_accuracy(cfg, status)
        paths, note = write_accuracy(result, outdir)
    console = _stdout()
    console.print(f"{result['activation']}: {result['workload']}; reference "
                  f"{result['reference']['method']} ({result['reference']['time_s']:.2f} s)")
    table = Table()
    for col in ("method", "setting", "time (s)", "max rel. err", "rel. Frob. err"):
        table.add_column(col, justify="left" if col in ("method", "setting") else "right")
    for r in result["rows"]:
        setting = (f"{r['parameter']} {r['value']:g}" if r["value"] is not None
                   else r["parameter"])
        table.add_row(r["method"], setting, _fmt(r["time_s"]), _fmt(r["max_rel_err"], ".2e"),
                      _fmt(r["rel_fro_err"], ".2e"))
    console.print(table)
    for r in result["rows"]:
        if r.get("note"):
            click.echo(f"ntkhgm: note: {r['method']} {r['parameter']} {r['value']}: "
                       f"{r['note']}", err=True)
    for s in result["skipped"]:
        click.echo(f"ntkhgm: note: skipped {s}", err=True)
    if note:
        click.echo(f"ntkhgm: note: {note}", err=True)
    click.echo("ntkhgm: wrote " + ", ".join(str(p) for p in paths), err=True)
