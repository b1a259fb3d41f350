"""Commands ``activations``, ``dual``, ``kernel`` and ``regress``.

Results go to stdout (CSV when no ``-o`` is given, so commands compose in
pipelines); progress bars and warnings go to stderr, progress bars only when
stderr is a terminal and ``--quiet`` is not given.  Output files are written
atomically, after all the work succeeded.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import click
import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..errors import InputError, NtkhgmError
from . import main

# ----------------------------------------------------------------------------- helpers


def _console(file) -> Console:
    try:
        tty = file.isatty()
    except (AttributeError, ValueError):
        tty = False
    # rich assumes 80 columns for pipes and files; tables read better a little wider
    return Console(file=file, highlight=False, soft_wrap=False, width=None if tty else 120)


def _stdout() -> Console:
    return _console(sys.stdout)


def _stderr() -> Console:
    return _console(sys.stderr)


@contextmanager
def _one_line_warnings() -> Iterator[None]:
    """Show Python warnings (e.g. AccuracyWarning) as one line on stderr, each once."""
    seen: set[str] = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        if text not in seen:
            seen.add(text)
            click.echo(f"ntkhgm: warning: {text}", err=True)

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        yield


@contextmanager
def _progress(description: str, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr (None when quiet or stderr is not a terminal)."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                   console=_stderr(), transient=True)
    with bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _check_output(output: str | None, inputs: list[str]) -> None:
    """Fail before any work on a bad output path or one that would overwrite an input."""
    if output is None or output == "-":
        return
    from ..io import check_output_path

    out = check_output_path(output).resolve()
    for path in inputs:
        if Path(path).resolve() == out:
            raise InputError(f"{output}: the output file would overwrite the input {path}")


def _write(output: str | None, array: np.ndarray, header: list[str] | None = None) -> None:
    from ..io import write_array

    try:
        write_array(None if output == "-" else output, array, header)
    except BrokenPipeError:
        # the reader of a pipeline (`| head`) went away: stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)


def _kernel_options(f):
    """Options shared by ``kernel`` and ``regress``."""
    opts = [
        click.option("--kind", type=click.Choice(["ntk", "nngp"]), default="ntk",
                     show_default=True, help="Neural tangent kernel or NNGP kernel."),
        click.option("--convention", type=click.Choice(["arora", "nt"]), default="arora",
                     show_default=True,
                     help="arora: Arora et al. 2019 (cσ-normalised); nt: neural-tangents' "
                          "Dense(W_std, b_std) stack."),
        click.option("--W-std", "W_std", type=float, default=1.0, show_default=True,
                     help="Weight standard deviation (convention nt only)."),
        click.option("--b-std", "b_std", type=float, default=0.0, show_default=True,
                     help="Bias standard deviation (convention nt only)."),
        click.option("--method", "-m", default="auto", show_default=True,
                     help="Dual-activation method: auto, closed, hgm, quad or gh."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _input_scale_option(default: str):
    """--input-scale of ``kernel`` (default none) and ``regress`` (default auto)."""
    return click.option(
        "--input-scale", type=click.Choice(["none", "auto", "unit-norm"]), default=default,
        show_default=True,
        help="Feature scaling fitted on TRAIN.csv: auto = one factor making the mean squared "
             "row norm 1; unit-norm = each row to the unit sphere; none = as given.")


# ----------------------------------------------------------------------------- activations


def _pfaffian_flag(name: str, derivative: bool) -> str:
    """yes / no / invalid for an entry's Pfaffian file where it is looked up (unvalidated)."""
    from ..algebra.cache import has_pfaffian

    try:
        return "yes" if has_pfaffian(name, derivative=derivative) else "no"
    except NtkhgmError:
        return "invalid"
    except OSError:  # an unreadable cache must not break the catalog listing
        return "?"


def _user_rows() -> list[tuple[str, str, str]]:
    """(name, σ(u), Pfaffian σ/σ') of each user activation in the user folder."""
    from ..algebra.cache import list_user_activations, load_pfaffian

    rows = []
    for name in list_user_activations():
        formula = ""
        flags = []
        for derivative in (False, True):
            try:
                system = load_pfaffian(name, derivative)
            except NtkhgmError:
                flags.append("invalid")
                continue
            flags.append("no" if system is None else "yes")
            if system is not None and not derivative:
                formula = system.expression or f"annihilated by {system.annihilator}"
        rows.append((name, formula, "/".join(flags)))
    return rows


@main.command("activations")
def activations_cmd() -> None:
    """List the activations: the catalog (shipped Pfaffian systems) and the user's own."""
    from ..activations import list_activations
    from ..numeric.closed_forms import closed_form
    from ..paths import user_pfaffian_dir

    def yn(flag: bool) -> str:
        return "yes" if flag else "no"

    table = Table()
    for col in ("name", "σ(u)", "holonomic", "closed form σ/σ'", "Pfaffian σ/σ'", "source"):
        table.add_column(col)
    for act in list_activations():
        closed = "/".join(yn(closed_form(act.name, d) is not None) for d in (False, True))
        pf = "/".join(_pfaffian_flag(act.name, d) for d in (False, True))
        table.add_row(act.name, act.formula, yn(act.holonomic), closed, pf, "catalog")
    users = _user_rows()
    for name, formula, pf in users:
        table.add_row(name, formula, "yes", "no/no", pf, "user")
    console = _stdout()
    console.print(table)
    console.print("relu2 … relu9 (uⁿ·Y(u)) are available by name.")
    console.print(f"User activations ({len(users)}) live in {user_pfaffian_dir()}; "
                  "create one with `ntkhgm pfaffian --annihilator OP --name NAME`.")


# ----------------------------------------------------------------------------- dual


def _fmt_diff(x: float) -> str:
    return "0" if x == 0 else f"{x:.2e}"


@main.command("dual")
@click.option("--activation", "-a", required=True, help="Activation name (see `activations`).")
@click.option("--a", "a", type=float, required=True, help="Variance of u, Λ11.")
@click.option("--b", "b", type=float, required=True, help="Variance of v, Λ22.")
@click.option("--c", "c", type=float, required=True, help="Covariance of u and v, Λ12.")
@click.option("--derivative", is_flag=True, help="Dual of σ' instead of σ.")
@click.option("--degree", type=click.IntRange(1, 1000), default=25, show_default=True,
              help="Degree of the Gauss–Hermite rule (method gh).")
def dual_cmd(activation: str, a: float, b: float, c: float, derivative: bool,
             degree: int) -> None:
    """E[σ(u)σ(v)], (u, v) ~ N(0, [[a, c], [c, b]]), by every available method.

    Differences are taken against the most accurate method (first row); the
    relative column divides by the Cauchy–Schwarz scale √(D(a,a,a)·D(b,b,b)).
    """
    from ..duals import (
        as_activation,
        available_methods,
        dual,
        regions,
        resolve_method,
        validate_covariance,
    )
    from ..numeric.covariance import sqrt_product

    act = as_activation(activation)
    validate_covariance(a, b, c)
    rows = []
    with _one_line_warnings():
        for method in available_methods(act, derivative):
            opts = {"degree": degree} if method == "gh" else {}
            t0 = time.perf_counter()
            try:
                value = float(dual(act, a, b, c, derivative=derivative, method=method, **opts))
                rows.append((method, value, time.perf_counter() - t0, None))
            except NtkhgmError as exc:
                rows.append((method, None, time.perf_counter() - t0, str(exc)))
        good = [r for r in rows if r[1] is not None]
        if not good:
            raise NtkhgmError(f"no method could evaluate the dual of {act.name}: "
                              + "; ".join(f"{m}: {e}" for m, _, _, e in rows))
        ref_method, ref = good[0][0], good[0][1]
        try:
            scale = float(sqrt_product(  # not √(xy): the product may overflow
                dual(act, a, a, a, derivative=derivative, method=ref_method),
                dual(act, b, b, b, derivative=derivative, method=ref_method)))
        except NtkhgmError:
            scale = float("nan")

    what = "σ'(u)σ'(v)" if derivative else "σ(u)σ(v)"
    root = float(sqrt_product(a, b))
    rho = c / root if root > 0 else float("nan")
    title = f"E[{what}] for {act.name}, Λ = [[{a!r}, {c!r}], [{c!r}, {b!r}]], ρ = {rho:.6g}"
    table = Table()
    for col, justify in (("method", "left"), ("value", "right"), (f"|Δ| vs {ref_method}", "right"),
                         ("|Δ| / CS scale", "right"), ("time", "right")):
        table.add_column(col, justify=justify)
    for method, value, seconds, error in rows:
        if value is None:
            table.add_row(method, f"error: {error}", "", "", f"{seconds:.3g} s")
            continue
        diff = abs(value - ref)
        rel = diff / scale if scale > 0 else float("nan")
        table.add_row(method, repr(value), _fmt_diff(diff),
                      _fmt_diff(rel) if np.isfinite(rel) else "n/a", f"{seconds:.3g} s")
    console = _stdout()
    console.print(title)
    console.print(table)
    console.print(f"CS scale √(D(a,a,a)·D(b,b,b)) = {scale!r}")
    with _one_line_warnings():
        auto = resolve_method(act, derivative, "auto")
        try:
            where = ", ".join(regions(act, a, b, c, derivative=derivative))
        except NtkhgmError as exc:
            where = f"error: {exc}"
    console.print(f"auto uses {auto}" + (f": {where}" if where else ""))
    if auto != "hgm" and any(m == "hgm" and v is not None for m, v, _, _ in rows):
        with _one_line_warnings():
            where = ", ".join(regions(act, a, b, c, derivative=derivative, method="hgm"))
        console.print("hgm uses " + (where or "no region"))


# ----------------------------------------------------------------------------- kernel


class _Depths(click.ParamType):
    """``3`` or a comma-separated list ``1,2,3`` of non-negative depths."""

    name = "L[,L...]"

    def convert(self, value, param, ctx):
        if isinstance(value, (int, tuple)):
            return value
        parts = [p.strip() for p in str(value).split(",")]
        try:
            depths = [int(p) for p in parts]
        except ValueError:
            self.fail(f"{value!r} is not a depth or a comma-separated list of depths", param,
                      ctx)
        if any(d < 0 for d in depths):
            self.fail(f"{value!r}: depths are non-negative", param, ctx)
        return depths[0] if len(depths) == 1 else tuple(depths)


@main.command("kernel")
@click.argument("train", metavar="TRAIN.csv")
@click.option("--test", "test", metavar="TEST.csv",
              help="Compute K(TEST, TRAIN) (n_test × n_train) instead of K(TRAIN, TRAIN).")
@click.option("--target", help="Label column to drop from the features: header name or "
                               "0-based index (negative counts from the end).")
@click.option("--activation", "-a", required=True, help="Activation name (see `activations`).")
@click.option("--depth", "-L", type=_Depths(), required=True,
              help="Number of hidden layers L, or several (1,2,3: every depth in one pass, "
                   "written to -o K.npz or K.zarr).")
@_kernel_options
@_input_scale_option("none")
@click.option("-o", "--output", metavar="K.npy|K.zarr|K.npz|K.csv",
              help="Output file: .npy and .zarr are written tile by tile (out of core, "
                   "resumable); .npz, .csv, .txt are written at the end; default: CSV on "
                   "stdout.")
@click.option("--tile", type=click.IntRange(min=1), metavar="ROWS",
              help="Tile edge in rows (default: from the memory budget).")
@click.option("--memory", metavar="SIZE",
              help="Memory budget, e.g. 2GB or 512MiB (default: $NTKHGM_MEMORY, else a "
                   "quarter of the available memory, at most 1 GiB, for the tiles).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes of a local Dask cluster (1: this process).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run the tiles on the dask.distributed cluster of this scheduler "
                   "(default: $DASK_SCHEDULER_ADDRESS).")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted run of the same command into the same -o K.npy "
                   "or K.zarr: finished tiles are kept.")
def kernel_cmd(train: str, test: str | None, target: str | None, activation: str, depth,
               kind: str, convention: str, W_std: float, b_std: float, method: str,
               quiet: bool, input_scale: str, output: str | None, tile: int | None,
               memory: str | None, jobs: int, scheduler: str | None, resume: bool) -> None:
    """NTK or NNGP kernel matrix of the rows of TRAIN.csv (and TEST.csv)."""
    from ..duals import as_activation
    from ..io import load_table, load_test_table
    from ..kernels import _check_depths, in_memory_sink, plan_kernel, run_tiles
    from ..parallel import cluster_client
    from ..regression import scale_inputs
    from ..store import (
        TiledOutput,
        check_output,
        check_size,
        output_kind,
        resume_edge,
        write_in_memory,
    )
    from ..tiling import memory_budget

    act = as_activation(activation)
    depths, _ = _check_depths(depth)
    check_output(output, depths)
    inputs = [train] + ([test] if test else [])
    if output_kind(output) in ("zarr", "npz"):
        for path in inputs:
            if Path(path).resolve() == Path(output).resolve():
                raise InputError(f"{output}: the output would overwrite the input {path}")
    else:
        _check_output(output, inputs)
    if memory is not None:
        memory_budget(memory)  # a bad value fails before the files are read
    tiled = output_kind(output) in ("npy", "zarr")
    if resume and not tiled:
        raise InputError("--resume needs an output written tile by tile: -o K.npy or K.zarr")
    tr = load_table(train, target=target)
    X1, X2 = scale_inputs(tr.X, None, input_scale)
    if test is not None:
        X2, X1 = scale_inputs(tr.X, load_test_table(test, tr, target).X, input_scale)
    shape = (len(X1), len(X1 if X2 is None else X2))
    check_size(output, shape, len(depths))
    if resume and tile is None:
        tile = resume_edge(output)
    t0 = time.perf_counter()
    label = "L=" + ",".join(map(str, depths))
    with _one_line_warnings(), cluster_client(jobs, scheduler) as client:
        from ..parallel import n_workers

        local_workers = jobs if client is not None and scheduler is None else 1
        plan, _ = plan_kernel(X1, X2, activation=act, depth=depth, kind=kind,
                              convention=convention, W_std=W_std, b_std=b_std, method=method,
                              tile=tile, memory=memory, workers=local_workers,
                              parallel=1 if client is None else n_workers(client),
                              held=0 if tiled else 8 * shape[0] * shape[1] * len(depths))
        with _progress(f"{kind} {act.name} {label}: tiles", quiet) as progress:
            if tiled:
                stale = Path(output + ".partial")
                if not resume and stale.exists() and not quiet:
                    click.echo(f"ntkhgm: note: replacing {stale} of an earlier run (--resume "
                               "would continue it)", err=True)
                store = TiledOutput(output, plan, resume)
                try:
                    run_tiles(plan, store.write, skip=store.done, client=client,
                              progress=progress)
                except NtkhgmError:
                    store.discard()  # a rerun would fail the same way
                    raise
                except KeyboardInterrupt:
                    click.echo(f"ntkhgm: interrupted: {len(store.done)} of {len(plan.tiles)} "
                               f"tiles kept in {store.partial}; rerun with --resume",
                               err=True)
                    sys.exit(130)
                store.finish()
            else:
                K, sink = in_memory_sink(plan)
                run_tiles(plan, sink, client=client, progress=progress)
    if target is None and tr.header is not None:  # after the work: an error stays one line
        _warn_header_features(train, tr.header)
    if not tiled:
        write_in_memory(output, K, _write)
    if output not in (None, "-") and not quiet:
        click.echo(f"ntkhgm: wrote {output}: {shape[0]}×{shape[1]} {kind.upper()} "
                   f"({act.name}, depth {','.join(map(str, depths))}, {convention}) in "
                   f"{time.perf_counter() - t0:.2f} s, {len(plan.tiles)} tiles of "
                   f"≤{min(plan.edge, max(shape))}×{min(plan.edge, max(shape))}", err=True)


def _warn_header_features(path: str, header: list[str]) -> None:
    """One stderr line: a header without --target means every column is a feature."""
    shown = ", ".join(header[:12]) + (f", … ({len(header)} in all)" if len(header) > 12 else "")
    click.echo(f"ntkhgm: warning: {path} has a header and no --target was given: using all "
               f"{len(header)} columns as features ({shown}); drop a label column with "
               "--target NAME", err=True)


# ----------------------------------------------------------------------------- regress


class _Ridge(click.ParamType):
    """``auto`` or a finite number >= 0."""

    name = "auto|λ"

    def convert(self, value, param, ctx):
        if isinstance(value, float) or value == "auto":
            return value
        try:
            v = float(value)
        except ValueError:
            v = float("nan")
        if not (np.isfinite(v) and v >= 0):
            # a user error like any other: one line, exit status 2
            raise InputError(f"--ridge {value!r}: neither 'auto' nor a finite number >= 0")
        return v


@main.command("regress")
@click.argument("train", metavar="TRAIN.csv")
@click.argument("test", metavar="TEST.csv")
@click.option("--target", required=True, help="Label column: header name or 0-based index "
                                               "(negative counts from the end).")
@click.option("--activation", "-a", default="relu", show_default=True,
              help="Activation name (see `activations`).")
@click.option("--depth", "-L", type=click.IntRange(min=0), default=1, show_default=True,
              help="Number of hidden layers L.")
@click.option("--ridge", type=_Ridge(), default="auto", show_default=True,
              help="Ridge λ ≥ 0 added to the diagonal of K(TRAIN, TRAIN), or auto: chosen by "
                   "leave-one-out among 10^k·mean(diag K), k = -6, -5.5, …, 2.")
@_kernel_options
@_input_scale_option("auto")
@click.option("--center/--no-center", default=None,
              help="Subtract the training mean of the target (added back to the predictions) "
                   "[default: yes, except with --input-scale none, the seed's setting].")
@click.option("-o", "--output", metavar="PRED.csv",
              help="Write predictions here (.csv, .txt or .npy); default: CSV on stdout, "
                   "metrics on stderr.")
@click.option("--solver", type=click.Choice(["auto", "direct", "cg"]), default="auto",
              show_default=True,
              help="direct: Cholesky (or, for --ridge auto, one eigendecomposition) in the "
                   "kernel's own memory; cg: conjugate gradients over K(TRAIN, TRAIN) written "
                   "tile by tile to a zarr store (--ridge auto: leave-one-out on 2000 random "
                   "training rows); auto: direct when it fits the memory budget, else cg.")
@click.option("--memory", metavar="SIZE",
              help="Memory budget, e.g. 16GB (default: $NTKHGM_MEMORY, else the available "
                   "memory): sizes the tiles and decides --solver auto.")
@click.option("--tile", type=click.IntRange(min=1), metavar="ROWS",
              help="Tile edge in rows (default: from the memory budget).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=1, show_default=True,
              help="Worker processes of a local Dask cluster for the tiles (and cg's products).")
@click.option("--scheduler", metavar="ADDRESS",
              help="Run the tiles (and cg's products) on this dask.distributed cluster "
                   "(default: $DASK_SCHEDULER_ADDRESS).")
@click.option("--kernel-store", metavar="K.zarr",
              help="cg: write K(TRAIN, TRAIN) here and keep it (default: a temporary folder, "
                   "removed after the fit; with --scheduler on several machines, a folder "
                   "every worker can read).")
@click.option("--cg-tol", type=float, metavar="TOL",
              help="cg: stop when ‖(K + λI)α − y‖ ≤ TOL·‖y‖ [default: 1e-10].")
def regress_cmd(train: str, test: str, target: str, activation: str, depth: int,
                ridge: float | str, kind: str, convention: str, W_std: float, b_std: float,
                method: str, quiet: bool, input_scale: str, center: bool | None,
                output: str | None, solver: str, memory: str | None, tile: int | None,
                jobs: int, scheduler: str | None, kernel_store: str | None,
                cg_tol: float | None) -> None:
    """Kernel regression f(x) = ȳ + K(x, X)(K(X, X) + λI)⁻¹(y − ȳ): predictions and metrics.

    TEST.csv may lack the target column; then only predictions are written.
    With --ridge auto the chosen λ and its leave-one-out error go to stderr.
    """
    from ..duals import as_activation
    from ..io import load_table, load_test_table
    from ..parallel import cluster_client
    from ..regression import KernelRegressor, regression_metrics

    act = as_activation(activation)
    _check_output(output, [train, test])
    model = KernelRegressor(activation=act.name, depth=depth, ridge=ridge, kind=kind,
                            convention=convention, W_std=W_std, b_std=b_std, method=method,
                            input_scale=input_scale,
                            center="auto" if center is None else center, solver=solver,
                            memory=memory, tile=tile, kernel_store=kernel_store, cg_tol=cg_tol)
    model._check_solver((depth,))  # incompatible options: one line, before the files are read
    if kernel_store is not None:
        from ..store import check_output

        check_output(kernel_store, (depth,))
        for path in (train, test):
            if Path(path).resolve() == Path(kernel_store).resolve():
                raise InputError(f"{kernel_store}: the kernel store would overwrite {path}")
    tr = load_table(train, target=target)
    te = load_test_table(test, tr, target)
    with _one_line_warnings(), cluster_client(jobs, scheduler) as client:
        with _progress("fit: K(train, train)", quiet) as progress:
            model.fit(tr.X, tr.y, progress=progress, client=client)
        with _progress("predict: K(test, train)", quiet) as progress:
            pred = model.predict(te.X, progress=progress, client=client)
    if ridge == "auto" and not quiet:
        rows = (f", on {model.loo_rows_} of {len(tr.X)} training rows"
                if model.solver_ == "cg" and model.loo_rows_ < len(tr.X) else "")
        click.echo(f"ntkhgm: ridge auto: λ = {model.ridge_:.6g} "
                   f"(leave-one-out mean squared error {model.loo_error_:.6g}{rows})", err=True)
    if model.solver_ == "cg" and not quiet:
        why = ""
        if solver == "auto":
            from ..regression import direct_solver_memory
            from ..tiling import format_bytes

            need = direct_solver_memory(len(tr.X), 1, ridge == "auto")
            why = f" (auto: the direct solver would need {format_bytes(need)})"
        click.echo(f"ntkhgm: solver cg: {model.cg_iterations_} iterations over the "
                   f"{len(tr.X)}×{len(tr.X)} kernel"
                   + (f", kept in {kernel_store}" if kernel_store else "") + why, err=True)
    name = f"{tr.target_name}_pred" if tr.target_name else "prediction"
    _write(output, pred, [name])
    if te.y is None:
        return
    metrics = regression_metrics(te.y, pred)
    to_stdout = output not in (None, "-")
    title = (f"{kind.upper()} regression ({act.name}, depth {depth}, ridge "
             f"{model.ridge_:.6g}{' (auto)' if ridge == 'auto' else ''}, input scale "
             f"{input_scale}, {'centred' if model.centered_ else 'raw'} targets): "
             f"{len(tr.X)} train, {len(te.X)} test")
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("RMSE", f"{metrics['rmse']:.6g}")
    table.add_row("relative error ‖pred−y‖/‖y‖", f"{metrics['relative_error']:.6g}")
    table.add_row("R²", f"{metrics['r2']:.6g}")
    console = _stdout() if to_stdout else _stderr()
    console.print(title)
    console.print(table)
