"""The backend interface and a pexpect session to a computer algebra system (CAS).

A :class:`CASSession` is one long-lived CAS process on a pseudo-terminal, in a
process group of its own.  Every exchange ends with a marker the session asks the
CAS to print, so that output is read without guessing at prompts.  Faults become
typed errors: a missing executable :class:`BackendNotFoundError`, no answer in
time :class:`BackendTimeoutError` (the whole process group is killed first), a
dead process or an error printed by the CAS :class:`BackendCrashError` carrying
the CAS's own text.  Processes are reaped on close and at interpreter exit, so
none is left orphaned.
"""

from __future__ import annotations

import atexit
import itertools
import math
import os
import resource
import signal
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import pexpect

from ...errors import BackendCrashError, BackendNotFoundError, BackendTimeoutError, InputError
from ..annihilator import Annihilator

__all__ = ["Backend", "BackendResult", "CASSession", "default_timeout", "memory_limit"]

_LIVE: weakref.WeakSet[CASSession] = weakref.WeakSet()


MAX_TIMEOUT_S = 7 * 24 * 3600.0
"""Largest accepted ``NTKHGM_CAS_TIMEOUT`` (a week; select() rejects far larger values)."""
MEMORY_MB_RANGE = (64, 1 << 24)
"""Accepted ``NTKHGM_CAS_MEMORY_MB``: 64 MiB .. 16 TiB (smaller cannot start a CAS)."""


def default_timeout() -> float:
    """Seconds one CAS stage may take: env ``NTKHGM_CAS_TIMEOUT`` (default 600).

    A value that is not a finite number in (0, MAX_TIMEOUT_S] is an InputError:
    a typo must never mean "no limit" or a silent default.
    """
    raw = os.environ.get("NTKHGM_CAS_TIMEOUT", "").strip()
    if not raw:
        return 600.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise InputError(f"NTKHGM_CAS_TIMEOUT={raw[:40]!r}: expected seconds, a number in "
                         f"(0, {MAX_TIMEOUT_S:g}]")
    return value


def memory_limit() -> int:
    """Address-space limit for the CAS in bytes: env ``NTKHGM_CAS_MEMORY_MB`` (default 8192).

    Anything but an integer in MEMORY_MB_RANGE is an InputError (never "no limit").
    """
    raw = os.environ.get("NTKHGM_CAS_MEMORY_MB", "").strip()
    if not raw:
        return 8192 * 1024 * 1024
    lo, hi = MEMORY_MB_RANGE
    if not (raw.isascii() and raw.isdigit() and lo <= int(raw) <= hi):
        raise InputError(f"NTKHGM_CAS_MEMORY_MB={raw[:40]!r}: expected an integer number of "
                         f"MiB from {lo} to {hi}")
    return int(raw) * 1024 * 1024


class CASSession:
    """One CAS process driven through pexpect (see the module docstring)."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
                 timeout: float | None = None, memory_bytes: int | None = None,
                 error_detector: Callable[[str], str | None] | None = None,
                 startup: str | None = None, cwd: str | None = None,
                 marker: Callable[[str], str] | None = None,
                 interrupt_texts: tuple[str, ...] = ()):
        self.name = name
        # what the CAS prints when it gets SIGINT (it then waits for an answer on its
        # terminal): seen instead of the end marker, it is an error at once
        self.interrupt_texts = tuple(interrupt_texts)
        self._marker = marker
        self.timeout = default_timeout() if timeout is None else timeout
        self.error_detector = error_detector
        self._counter = itertools.count(1)
        self.transcript_tail = ""
        mem = memory_limit() if memory_bytes is None else memory_bytes

        def _limits() -> None:  # runs in the child before exec
            if mem:
                try:
                    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
                except (ValueError, OSError):
                    pass

        try:
            self.proc = pexpect.spawn(argv[0], argv[1:], env=env, encoding="utf-8",
                                      codec_errors="replace", echo=False,
                                      timeout=self.timeout, maxread=65536,
                                      searchwindowsize=None, preexec_fn=_limits, cwd=cwd)
        except (pexpect.ExceptionPexpect, OSError) as exc:
            raise BackendNotFoundError(f"{name}: cannot start {argv[0]!r}: {exc}") from None
        self.proc.delaybeforesend = None
        _LIVE.add(self)
        if startup:
            self.run(startup, timeout=max(self.timeout, 120))

    @property
    def pid(self) -> int:
        return self.proc.pid

    # -- protocol ----------------------------------------------------------------
    def marker_command(self, marker: str) -> str:
        """The command text that makes the CAS print ``marker`` on a line of its own."""
        if self._marker is None:
            raise NotImplementedError("pass marker= or override marker_command")
        return self._marker(marker)

    def run(self, commands: str, timeout: float | None = None) -> str:
        """Send ``commands`` (lines), wait for the end marker, return the output.

        Raises BackendTimeoutError (process killed), BackendCrashError (process
        died, or the CAS reported an error: its own text is in the message).
        """
        if not self.alive():
            raise BackendCrashError(f"{self.name}: the process is not running "
                                    f"({self._exit_text()})")
        n = next(self._counter)
        marker = f"@@NTKHGM_DONE_{n}@@"
        timeout = self.timeout if timeout is None else timeout
        try:
            for line in commands.splitlines():
                if line.strip():
                    self.proc.sendline(line)
            self.proc.sendline(self.marker_command(marker))
            hit = self.proc.expect_exact([marker, *self.interrupt_texts], timeout=timeout)
            if hit:
                partial = self._tail(self.proc.before)
                self.kill()
                raise BackendCrashError(
                    f"{self.name}: the process was interrupted (SIGINT) and was killed"
                    + (f" (last output: {partial})" if partial else ""))
        except pexpect.TIMEOUT:
            partial = self._tail(self.proc.before)
            self.kill()
            raise BackendTimeoutError(
                f"{self.name}: no answer within {timeout:g} s; the process was killed"
                + (f" (last output: {partial})" if partial else "")) from None
        except pexpect.EOF:
            partial = self._tail(self.proc.before)
            self.kill()
            raise BackendCrashError(
                f"{self.name}: the process died ({self._exit_text()})"
                + (f"; last output: {partial}" if partial else "")) from None
        except OSError as exc:
            self.kill()
            raise BackendCrashError(f"{self.name}: lost the connection to the process: "
                                    f"{exc}") from None
        out = self.proc.before or ""
        self.transcript_tail = out[-4000:]
        if self.error_detector is not None:
            err = self.error_detector(out)
            if err:
                raise BackendCrashError(f"{self.name} reported an error: {err}")
        return out

    @staticmethod
    def _tail(text: str | None, n: int = 300) -> str:
        if not text:
            return ""
        t = " ".join(text.split())
        return t[-n:]

    def _exit_text(self) -> str:
        st, sig = self.proc.exitstatus, self.proc.signalstatus
        if sig is not None:
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
            return f"killed by signal {name}"
        if st is not None:
            return f"exit status {st}"
        return "no exit status"

    def alive(self) -> bool:
        try:
            return self.proc.isalive()
        except Exception:  # noqa: BLE001 - pexpect raises various things on dead ptys
            return False

    def kill(self) -> None:
        """Kill the whole process group (SIGKILL) and reap it."""
        pid = self.proc.pid
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            pass
        try:
            self.proc.close(force=True)
        except Exception:  # noqa: BLE001
            pass
        deadline = time.monotonic() + 5
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        _LIVE.discard(self)

    def close(self, quit_command: str | None = None) -> None:
        """End the session politely (``quit_command``), then make sure it is gone."""
        if self.alive() and quit_command:
            try:
                self.proc.sendline(quit_command)
                self.proc.expect(pexpect.EOF, timeout=2)
            except Exception:  # noqa: BLE001
                pass
        self.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@atexit.register
def _reap_all() -> None:  # pragma: no cover - interpreter shutdown
    for s in list(_LIVE):
        s.kill()


@dataclass
class BackendResult:
    """What a backend returns: standard monomials and Pfaffian matrices (docs/math.md §4).

    ``matrices[key][i][j]`` is a pair (num, den) of sparse exact polynomials in
    x11, x12, x22; ``std_monomials`` exponents (i, j, k) of ∂11^i ∂12^j ∂22^k.
    """

    std_monomials: list[tuple[int, int, int]]
    matrices: dict[str, list[list[tuple[dict, dict]]]]
    timings: dict[str, float] = field(default_factory=dict)


class Backend(ABC):
    """A CAS that turns an annihilator into a Pfaffian system (docs/math.md §4)."""

    name: str = "?"

    @classmethod
    @abstractmethod
    def locate(cls) -> str | None:
        """Path of the CAS executable, or None when it is not installed."""

    @classmethod
    def available(cls) -> bool:
        return cls.locate() is not None

    @abstractmethod
    def version(self) -> str:
        """The CAS version string."""

    @abstractmethod
    def pfaffian(self, annihilator: Annihilator,
                 progress: Callable[[str, float], None] | None = None) -> BackendResult:
        """Koyama–Takemura ideal → restriction → Gröbner basis → Pfaffian (docs/math.md §4)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the CAS session."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def require(path: str | None, name: str, hint: str) -> str:
    if path is None:
        raise BackendNotFoundError(f"{name} not found; {hint}")
    return path
