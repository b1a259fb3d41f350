"""The ``ntkhgm`` command line (click).

Each command group lives in its own module and registers itself on :data:`main`.
User errors (:class:`ntkhgm.errors.NtkhgmError`) and click's usage errors become
one line ``ntkhgm: error: …`` on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import sys

import click

from ..errors import NtkhgmError


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Group(click.Group):
    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True,
             **extra):
        """Click's own usage errors (bad option, missing argument) as one line, exit 2."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False,
                                **extra)
        except click.ClickException as exc:
            no_args = getattr(click.exceptions, "NoArgsIsHelpError", ())
            if isinstance(exc, no_args) and exc.ctx is not None:  # bare `ntkhgm`: the help
                click.echo(exc.ctx.get_help())
                sys.exit(0)
            where = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                where = f" (see `{exc.ctx.command_path} --help`)"
            click.echo(f"ntkhgm: error: {_one_line(exc.format_message())}{where}", err=True)
            sys.exit(2)
        except click.Abort:
            click.echo("ntkhgm: error: interrupted", err=True)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except NtkhgmError as exc:
            click.echo(f"ntkhgm: error: {exc}", err=True)
            sys.exit(2)
        except MemoryError:
            click.echo("ntkhgm: error: out of memory", err=True)
            sys.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ntkhgm")
def main() -> None:
    """Neural tangent and NNGP kernels by the holonomic gradient method."""


def _register() -> None:
    # imported for their side effect of adding commands to ``main``
    from . import commands  # noqa: F401


_register()
