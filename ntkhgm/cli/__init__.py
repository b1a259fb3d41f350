"""The ``ntkhgm`` command line (click).

Each command group lives in its own module and registers itself on :data:`main`.
User errors (:class:`ntkhgm.errors.NtkhgmError`) become one line on stderr and
exit status 2, never a traceback.
"""

from __future__ import annotations

import sys

import click

from ..errors import NtkhgmError


class _Group(click.Group):
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
