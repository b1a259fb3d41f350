"""Atomic file writes: a temporary file in the target's folder, then a rename.

A reader sees the old file or the complete new one, never a half-written one.
A failure, Ctrl-C, SIGTERM or SIGHUP during the write leaves no temporary file
behind: while a write is in progress (main thread) SIGTERM and SIGHUP are turned
into an exception, the temporary file is removed, and the signal is then
re-delivered with its previous handler, so the process still ends the way the
sender asked.  SIGKILL cannot be caught: temporary files carry the writer's pid
(``.<name>.<pid>.<random>.tmp``), and the next write into the same folder
removes those whose writer is gone.
"""

from __future__ import annotations

import os
import re
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

_CAUGHT = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None))
                if s is not None)
_TMP = re.compile(r"(\d+)\.[A-Za-z0-9_]+\.tmp")


class _Signalled(BaseException):
    """A caught SIGTERM/SIGHUP, raised in the main thread during a write."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


@contextmanager
def _signals_as_exceptions() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into :class:`_Signalled` (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}

    def handler(signum, frame):
        raise _Signalled(signum)

    try:
        for s in _CAUGHT:
            previous[s] = signal.signal(s, handler)
    except (ValueError, OSError):  # e.g. an embedded interpreter without signal support
        for s, h in previous.items():
            signal.signal(s, h)
        yield
        return
    try:
        yield
    except _Signalled as exc:
        for s, h in previous.items():
            signal.signal(s, h)
        previous = {}
        # deliver it again, now to the handler that was there before (default: terminate)
        os.kill(os.getpid(), exc.signum)
        raise SystemExit(128 + exc.signum) from None
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: Path, name: str) -> None:
    """Remove ``.<name>.<pid>.*.tmp`` files in ``folder`` whose writer process is gone."""
    prefix = f".{name}."
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        m = _TMP.fullmatch(entry.name[len(prefix):])
        if m is None:
            continue
        pid = int(m.group(1))
        if pid != os.getpid() and not _pid_alive(pid):
            try:
                if entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
            except OSError:
                pass


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(fh)`` on a temporary binary file, fsync it and rename it to ``path``."""
    path = Path(path)
    folder = path.parent or Path(".")
    remove_stale_temporaries(folder, path.name)
    tmp: str | None = None
    with _signals_as_exceptions():
        try:
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp",
                                       dir=folder)
            # mkstemp makes 0600 files; give the new file the mode a plain open() would
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            with os.fdopen(fd, "wb") as fh:
                write(fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            if tmp is not None:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
            raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))
