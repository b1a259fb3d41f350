"""Command ``ntkhgm pfaffian``: compute, cache, check and print Pfaffian systems (docs/math.md §4).

    ntkhgm pfaffian --activation relu [--derivative] [--backend auto|asir|singular]
                    [--force] [--check] [-o FILE] [--quiet]
    ntkhgm pfaffian --annihilator "u*du-1" --name myact [--derivative-annihilator "u*du"]
                    [--sigma "u*step(u)"] [--dsigma "step(u)"] [--derivative] ...

The JSON (schema ``ntkhgm.pfaffian/1``, see :mod:`ntkhgm.algebra.pfaffian`) goes to
``-o FILE`` (written atomically) or stdout; stages and timings go to stderr when
it is a terminal and ``--quiet`` is not given.  A cached or shipped system is
served unless ``--force``.  With ``--annihilator`` the σ system (and, given
``--derivative-annihilator``, the σ' system) is stored in the user cache under
``--name``; the one selected by ``--derivative`` is printed.  ``--sigma``/``--dsigma``
give σ/σ' as safe expressions (:mod:`ntkhgm.algebra.sigma_expr`) for the initial
values; they are checked against the annihilators and stored in the files.
"""

from __future__ import annotations

import sys
import time

import click
from rich.console import Console
from rich.table import Table

from ..atomic import atomic_write_text
from ..errors import InputError, PfaffianFileError
from . import main


def _console(quiet: bool) -> Console | None:
    if quiet:
        return None
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return Console(file=sys.stderr, highlight=False) if tty else None


@main.command("pfaffian")
@click.option("--activation", "activation", metavar="NAME",
              help="Catalog activation (see `ntkhgm activations`).")
@click.option("--annihilator", metavar="OP",
              help="Annihilator of a user activation σ, e.g. 'u*du-1' (u, du, + - * / ^ ( )).")
@click.option("--derivative-annihilator", "dannihilator", metavar="OP",
              help="Annihilator of σ' for a user activation.")
@click.option("--name", metavar="NAME", help="Name of the user activation (with --annihilator).")
@click.option("--sigma", "sigma", metavar="EXPR",
              help="σ of the user activation as an expression in u (e.g. 'u*step(u)'), "
                   "for initial values; checked against --annihilator.")
@click.option("--dsigma", "dsigma", metavar="EXPR",
              help="σ' of the user activation (checked against --derivative-annihilator).")
@click.option("--derivative", is_flag=True, help="The system of σ' (for the NTK's Σ̇).")
@click.option("--backend", type=click.Choice(["auto", "asir", "singular"]), default="auto",
              show_default=True, help="Computer algebra system.")
@click.option("--force", is_flag=True, help="Recompute even when a cached system exists.")
@click.option("--check", is_flag=True,
              help="Also check integrability exactly (sympy; minutes for rank 8). Always "
                   "done: integrability modulo a prime and ∂F = PF against quadrature.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the JSON here.")
@click.option("--quiet", "-q", is_flag=True, help="No stage display on stderr.")
def pfaffian_cmd(activation, annihilator, dannihilator, name, sigma, dsigma, derivative,
                 backend, force, check, output, quiet) -> None:
    """Pfaffian system ∂ij F = Pij F of an activation's dual (docs/math.md §4)."""
    from ..algebra.annihilator import parse_annihilator
    from ..algebra.cache import compute_pfaffian

    if (activation is None) == (annihilator is None):
        raise InputError("give exactly one of --activation NAME or --annihilator OP")
    if annihilator is not None:
        if not name:
            raise InputError("--annihilator needs --name NAME for the user activation")
        if derivative and dannihilator is None:
            raise InputError("--derivative with --annihilator needs --derivative-annihilator")
        # validate both strings before any CAS starts
        parse_annihilator(annihilator)
        if dannihilator is not None:
            parse_annihilator(dannihilator)
        if dsigma is not None and dannihilator is None:
            raise InputError("--dsigma needs --derivative-annihilator")
    elif dannihilator is not None or name is not None or sigma is not None or \
            dsigma is not None:
        raise InputError("--derivative-annihilator, --name, --sigma and --dsigma go with "
                         "--annihilator")

    con = _console(quiet)
    started = time.perf_counter()

    def progress(stage: str, seconds: float) -> None:
        if con is not None:
            if stage == "cache":
                con.print("[dim]served from the cache (use --force to recompute)[/]")
            else:
                con.print(f"  {stage:<14} {seconds:8.2f} s")

    jobs: list[tuple[str, bool, str | None]] = []
    if annihilator is not None:
        jobs.append((annihilator, False, sigma))
        if dannihilator is not None:
            jobs.append((dannihilator, True, dsigma))
    else:
        jobs.append((activation, derivative, None))

    from ..activations import is_catalog_name
    from ..algebra.backends import get_backend

    be = None
    selected = None
    served = False
    try:
        for text, deriv, expr in jobs:
            if con is not None:
                label = name or activation
                con.print(f"[bold]{label}{' (σ′)' if deriv else ''}[/]")
            if force and be is None:
                be = get_backend(backend)
            stages: list[str] = []

            def track(stage: str, seconds: float, stages=stages) -> None:
                stages.append(stage)
                progress(stage, seconds)

            system = compute_pfaffian(text, deriv, backend=backend, force=force, name=name,
                                      backend_obj=be, expression=expr, progress=track,
                                      exact_check=check,
                                      verify=lambda s: _numeric_check(s, con, 1))
            if deriv == derivative:
                selected, served = system, "cache" in stages
    finally:
        if be is not None:
            be.close()
    assert selected is not None
    _cross_check(selected)   # served or computed: it must match σ's own moments (issue 13)

    if check and served:
        _check(selected, con)
    if force and activation is not None and is_catalog_name(activation) and not quiet:
        click.echo("ntkhgm: note: a recomputed catalog system is not stored (catalog "
                   "activations use the shipped files); -o FILE writes it", err=True)
    if con is not None:
        t = Table(show_header=False, box=None)
        t.add_row("system", selected.key)
        t.add_row("annihilator", selected.annihilator)
        t.add_row("rank", str(selected.rank))
        t.add_row("basis", ", ".join(_mono(m) for m in selected.std_monomials))
        t.add_row("backend", f"{selected.backend} ({selected.backend_version})")
        t.add_row("elapsed", f"{time.perf_counter() - started:.2f} s")
        con.print(t)
    text = selected.to_json()
    if output:
        atomic_write_text(output, text)
    else:
        click.echo(text, nl=False)


def _cross_check(system) -> None:
    """checks.cross_check_system against σ (the file's expression or the catalog's)."""
    from ..activations import get_activation
    from ..algebra.annihilator import parse_annihilator
    from ..checks import cross_check_system
    from ..errors import UnknownActivationError

    f = system.function()
    if f is None:
        try:
            act = get_activation(system.activation)
        except UnknownActivationError:
            return  # a user system without σ: nothing independent to compare with
        ann = act.annihilator_of(system.derivative)
        if ann is None or parse_annihilator(ann).text() != system.annihilator:
            return
        f = act.function(system.derivative)
    cross_check_system(system, f)


def _mono(m: tuple[int, int, int]) -> str:
    parts = [f"∂{v}" + (f"^{e}" if e > 1 else "") for v, e in zip(("11", "12", "22"), m,
                                                                  strict=True) if e]
    return "·".join(parts) or "1"


def _check(system, con: Console | None) -> None:
    """Exact integrability (sympy) and the numeric check of a stored system."""
    from ..algebra.pfaffian import check_integrability_exact

    t0 = time.perf_counter()
    fails = check_integrability_exact(system)
    if fails:
        raise PfaffianFileError(f"{system.key}: not integrable ({', '.join(fails[:3])})")
    if con is not None:
        con.print(f"  integrability  exact, ok  {time.perf_counter() - t0:8.2f} s")
    _numeric_check(system, con, 2)


def _numeric_check(system, con: Console | None, n_points: int) -> None:
    """∂F = PF against 2-D quadrature at ``n_points`` random points, where σ (or σ')
    is known (about 5 s per point for rank 8)."""
    from ..activations import get_activation, is_catalog_name
    from ..algebra.annihilator import parse_annihilator
    from ..checks import check_pfaffian_numeric

    f = system.function()
    if f is None and is_catalog_name(system.activation):
        act = get_activation(system.activation)
        ann = act.annihilator_of(system.derivative)
        if ann is not None and parse_annihilator(ann).text() == system.annihilator:
            f = act.function(system.derivative)
    if f is None:
        if con is not None:
            con.print("  [yellow]numeric check skipped: σ of a user activation is unknown "
                      "(give --sigma/--dsigma)[/]")
        return
    t0 = time.perf_counter()
    err = check_pfaffian_numeric(system, f, n_points=n_points)
    if con is not None:
        con.print(f"  quadrature     max rel. err {err:.1e}  {time.perf_counter() - t0:8.2f} s")
