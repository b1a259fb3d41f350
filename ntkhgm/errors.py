"""The ntkhgm error hierarchy.

Every error a user can cause derives from :class:`NtkhgmError`; the CLI turns it
into a one-line message and exit status 2 (modelled on sympy.holonomic's
``SingularityError`` and friends).
"""

from __future__ import annotations


class NtkhgmError(Exception):
    """Base class: a problem the user can act on (bad input, missing backend...)."""


class InputError(NtkhgmError, ValueError):
    """Bad user input: a file, a CSV cell, an option value."""


class CSVInputError(InputError):
    """A CSV problem located at ``path:line:column``."""

    def __init__(self, path: str, message: str, line: int | None = None,
                 column: int | None = None):
        where = str(path)
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {message}")
        self.path, self.line, self.column = path, line, column


class UnknownActivationError(InputError, KeyError):
    """The activation name is not in the catalog."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InvalidCovarianceError(InputError):
    """Λ = [[a, c], [c, b]] is not a covariance matrix (a, b < 0 or c² > ab)."""


class MethodUnavailableError(NtkhgmError):
    """The requested dual-activation method cannot serve this activation."""


class AnnihilatorSyntaxError(InputError):
    """An annihilator string violates the grammar of ntkhgm.algebra.annihilator."""


class PfaffianFileError(NtkhgmError):
    """A Pfaffian JSON file is corrupt, tampered with, or inconsistent."""


class BackendError(NtkhgmError):
    """A computer algebra backend failed."""


class BackendNotFoundError(BackendError):
    """The CAS executable is not installed or not found."""


class BackendTimeoutError(BackendError):
    """The CAS did not answer in time; its process was killed."""


class BackendCrashError(BackendError):
    """The CAS process died or reported an error."""


class NumericalError(NtkhgmError, ArithmeticError):
    """A numerical method failed; carries the offending covariance."""

    def __init__(self, message: str, a: float | None = None, b: float | None = None,
                 c: float | None = None):
        if a is not None:
            message += f" (Λ = [[{a!r}, {c!r}], [{c!r}, {b!r}]])"
        super().__init__(message)
        self.a, self.b, self.c = a, b, c


class SingularityError(NumericalError):
    """An integration path meets a singular point of the Pfaffian system."""


class IntegrationError(NumericalError):
    """An ODE or quadrature step failed to reach the requested accuracy."""


class SingularKernelError(NumericalError):
    """K(X, X) + λI is not positive definite."""


class NonFiniteKernelError(NumericalError):
    """A kernel value came out inf or NaN; ``rows`` is the row pair, ``layer`` the layer."""

    def __init__(self, message: str, rows: tuple[str, str] | None = None,
                 layer: int | None = None):
        super().__init__(message)
        self.rows, self.layer = rows, layer
