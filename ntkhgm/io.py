"""Reading user CSV files and writing result arrays.

The reader is strict: every problem is a :class:`~ntkhgm.errors.CSVInputError`
whose message starts with ``path:line:column`` (1-based; the column is the
field number) and quotes the offending value.  Rules:

* comma-separated, UTF-8 (a BOM is accepted), RFC 4180 quoting;
  blank lines are skipped;
* a header is detected when any cell of the first non-blank row is not a
  number (so a header whose names are all numbers is read as data);
* every row has the same number of fields as the first row;
* every data cell is a finite number with ``|x| <= MAX_ABS`` (1e150): larger
  values would overflow (to inf) in squared norms and inner products
  ``x·x'`` (1e150² = 1e300, close to the double limit 1.8e308);
* a single data row, duplicate rows and all-zero rows are valid;
* numbers are ASCII only (``float()`` would also take Arabic-Indic or
  full-width digits and a no-break-space prefix: those are rejected);
* a file is at most ``MAX_INPUT_BYTES`` (256 MiB) and is read in chunks, so an
  endless stream (``/dev/zero``) or a huge file stops early with a clear message.

Writers produce CSV with every float written as ``repr(float)`` (the shortest
string that reads back to the same double) or ``.npy``, always atomically.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write, atomic_write_text
from .errors import CSVInputError, InputError

MAX_ABS = 1e150
"""Largest accepted |value| in an input CSV (squares must not overflow)."""

OUTPUT_SUFFIXES = (".csv", ".txt", ".npy")

MAX_INPUT_BYTES = 256 * 1024 * 1024
"""Largest accepted input file (a 256 MiB CSV is ~10 million cells; its parse
needs several times that in memory)."""

_CHUNK = 1 << 20
# a decimal number in ASCII, with optional ASCII blanks around it; the words nan/inf are
# matched too, so that they get the "not finite" message instead of "non-numeric"
_NUMBER = re.compile(r"[ \t]*[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                     r"|nan|inf|infinity)[ \t]*", re.IGNORECASE)


@dataclass
class CSVTable:
    """A parsed CSV file: features ``X``, optional target ``y`` and the column names."""

    path: str
    X: np.ndarray
    y: np.ndarray | None
    header: list[str] | None
    """All column names of the file, or None when it has no header."""
    feature_names: list[str] | None
    target_name: str | None
    n_columns: int
    """Number of fields per row in the file (features plus target)."""
    first_data_line: int
    first_line: int = 1
    """Line of the first non-blank row (the header, if any)."""


def _float(text: str) -> float:
    """float() of an ASCII decimal number only (no ``1_000``, no Unicode digits or spaces)."""
    if not _NUMBER.fullmatch(text):
        raise ValueError(text)
    return float(text)


def _is_number(text: str) -> bool:
    try:
        _float(text)
    except ValueError:
        return False
    return True


def _clip(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else value[:limit] + "..."


def _parse_cell(path: str, text: str, line: int, column: int, name: str | None) -> float:
    where = f" in column {name!r}" if name else ""
    if text.strip() == "":
        raise CSVInputError(path, f"empty cell{where} (missing value)", line, column)
    try:
        value = _float(text)
    except ValueError:
        hint = "" if text.isascii() else " (only ASCII digits, signs, '.', 'e' and blanks)"
        raise CSVInputError(path, f"non-numeric value {_clip(text)!r}{where}{hint}",
                            line, column) from None
    if not math.isfinite(value):
        raise CSVInputError(path, f"value {_clip(text)!r}{where} is not finite "
                            "(NaN and inf are not allowed)", line, column)
    if abs(value) > MAX_ABS:
        raise CSVInputError(path, f"value {_clip(text)!r}{where} is too large "
                            f"(|x| > {MAX_ABS:g}: its square would overflow)", line, column)
    return value


def _resolve_target(path: str, target: str | int, header: list[str] | None,
                    n_columns: int, line: int) -> int:
    """Column index (0-based) of ``target``: a header name or an integer index."""
    if header is not None and isinstance(target, str):
        matches = [i for i, h in enumerate(header) if h == target.strip()]
        if len(matches) > 1:
            raise CSVInputError(path, f"target column name {target!r} is ambiguous "
                                f"(columns {', '.join(str(i + 1) for i in matches)})", line)
        if matches:
            return matches[0]
    index: int | None
    if isinstance(target, int):
        index = target
    else:
        try:
            index = int(target.strip())
        except ValueError:
            index = None
    if index is None or not -n_columns <= index < n_columns:
        known = ", ".join(repr(h) for h in header) if header else f"indices 0..{n_columns - 1}"
        raise CSVInputError(path, f"unknown target column {target!r} "
                            f"(columns: {known}; or an index from {-n_columns} "
                            f"to {n_columns - 1})", line)
    return index % n_columns


def _read_text(path: str) -> str:
    """The file's text, read in chunks: at most MAX_INPUT_BYTES, no NUL bytes."""
    chunks: list[bytes] = []
    size = 0
    try:
        with open(path, "rb") as fh:
            while True:
                chunk = fh.read(_CHUNK)
                if not chunk:
                    break
                if b"\x00" in chunk:
                    line = b"".join(chunks).count(b"\n") + chunk[:chunk.index(b"\x00")].count(
                        b"\n") + 1
                    raise CSVInputError(path, "contains NUL bytes: not a text CSV file", line)
                size += len(chunk)
                if size > MAX_INPUT_BYTES:
                    raise CSVInputError(path, f"file too large (more than {MAX_INPUT_BYTES} "
                                        "bytes); split it or reduce it")
                chunks.append(chunk)
        raw = b"".join(chunks)
        del chunks
    except FileNotFoundError:
        raise CSVInputError(path, "no such file") from None
    except IsADirectoryError:
        raise CSVInputError(path, "is a directory, not a CSV file") from None
    except OSError as exc:
        raise CSVInputError(path, f"cannot read file: {exc.strerror or exc}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise CSVInputError(path, "not a UTF-8 text file (undecodable byte "
                            f"0x{raw[exc.start]:02x})", line) from None


def load_table(path: str | os.PathLike, *, target: str | int | None = None) -> CSVTable:
    """Parse a numeric CSV file strictly (see the module docstring for the rules)."""
    path = os.fspath(path)
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, list[str]]] = []
    try:
        for fields in reader:
            if not fields or all(f.strip() == "" for f in fields) and len(fields) == 1:
                continue
            rows.append((reader.line_num, fields))
    except csv.Error as exc:
        raise CSVInputError(path, f"malformed CSV: {exc}", reader.line_num) from None
    if not rows:
        raise CSVInputError(path, "empty file: no header and no data rows", 1, 1)

    first_line, first = rows[0]
    header: list[str] | None = None
    if any(f.strip() != "" and not _is_number(f) for f in first):
        header = [f.strip() for f in first]
        rows = rows[1:]
        if not rows:
            raise CSVInputError(path, "header only: no data rows", first_line + 1, 1)
    n_columns = len(first)

    data = np.empty((len(rows), n_columns), dtype=np.float64)
    names = header or [None] * n_columns
    for r, (line, fields) in enumerate(rows):
        if len(fields) != n_columns:
            column = min(len(fields), n_columns) + 1
            raise CSVInputError(path, f"ragged row: {len(fields)} fields, expected "
                                f"{n_columns} (as in line {first_line})", line, column)
        for j, cell in enumerate(fields):
            data[r, j] = _parse_cell(path, cell, line, j + 1, names[j])
    table = CSVTable(path, data, None, header, header, None, n_columns, rows[0][0], first_line)
    return table if target is None else split_target(table, target)


def split_target(table: CSVTable, target: str | int) -> CSVTable:
    """Move the ``target`` column (header name or 0-based index) of ``table.X`` into ``y``."""
    if table.y is not None:
        raise ValueError("the table already has a target")
    n_columns = table.n_columns
    index = _resolve_target(table.path, target, table.header, n_columns, table.first_line)
    if n_columns < 2:
        raise CSVInputError(table.path, "the target is the only column: no features left",
                            table.first_line, index + 1)
    y = table.X[:, index].copy()
    X = np.ascontiguousarray(np.delete(table.X, index, axis=1))
    target_name = feature_names = None
    if table.header is not None:
        target_name = table.header[index]
        feature_names = table.header[:index] + table.header[index + 1:]
    return CSVTable(table.path, X, y, table.header, feature_names, target_name, n_columns,
                    table.first_data_line, table.first_line)


def read_csv(path: str | os.PathLike, *, target: str | int | None = None
             ) -> tuple[np.ndarray, np.ndarray | None, list[str] | None]:
    """Read a numeric CSV file: ``(X, y, header)``.

    ``X`` holds the feature columns (float64), ``y`` the ``target`` column (a
    header name or a 0-based index, negative counts from the end; None: no
    target), ``header`` the file's column names (all columns) or None.
    Raises :class:`~ntkhgm.errors.CSVInputError` naming ``path:line:column``.
    """
    t = load_table(path, target=target)
    return t.X, t.y, t.header


def check_compatible(train: CSVTable, test: CSVTable) -> None:
    """Raise CSVInputError (located in the test file) unless the feature columns match."""
    n_train, n_test = train.X.shape[1], test.X.shape[1]
    if n_train != n_test:
        raise CSVInputError(
            test.path, f"{n_test} feature columns, but the training file {train.path} has "
            f"{n_train}", test.first_data_line, min(n_train, n_test) + 1)
    if train.feature_names is not None and test.feature_names is not None:
        for j, (a, b) in enumerate(zip(train.feature_names, test.feature_names, strict=True)):
            if a != b:
                col = j + 1
                if test.header is not None and b in test.header:
                    col = test.header.index(b) + 1
                raise CSVInputError(
                    test.path, f"feature column {b!r} does not match {a!r} in the training "
                    f"file {train.path}", test.first_line, col)


def load_test_table(path: str | os.PathLike, train: CSVTable,
                    target: str | int | None = None) -> CSVTable:
    """Read a test file that matches ``train``; with ``target``, its target column may be absent.

    A test file without the target column (one column fewer than the training
    file, and not naming the target in its header) gives ``y = None``:
    predictions without metrics.
    """
    table = load_table(path)
    if target is not None:
        lacks_target = table.n_columns == train.n_columns - 1 and (
            table.header is None or train.target_name not in table.header)
        if not lacks_target:
            table = split_target(table, target)
    check_compatible(train, table)
    return table


# ----------------------------------------------------------------------------- writing


def format_csv(array: np.ndarray, header: Sequence[str] | None = None) -> str:
    """CSV text for a 1-D or 2-D array; floats as ``repr`` (exact round trip)."""
    arr = np.asarray(array, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"can only write 1-D or 2-D arrays, not {arr.ndim}-D")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    if header is not None:
        writer.writerow(list(header))
    for row in arr.tolist():
        out.write(",".join(repr(v) for v in row))
        out.write("\n")
    return out.getvalue()


def check_output_path(path: str | os.PathLike) -> Path:
    """Validate an output path before any work is done (suffix, existing writable folder).

    Writability is probed by creating and removing a temporary file in the folder
    (``os.access`` is wrong for root and for read-only file systems).
    """
    p = Path(path)
    if p.suffix.lower() not in OUTPUT_SUFFIXES:
        raise InputError(f"{p}: unsupported output format {p.suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(OUTPUT_SUFFIXES)}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{p}: output folder {str(parent)!r} does not exist")
    if p.is_dir():
        raise InputError(f"{p}: is a directory")
    probe_writable(parent, f"{p}: output folder {str(parent)!r}")
    return p


def probe_writable(folder: Path, what: str) -> None:
    """Raise InputError unless a file can be created in ``folder`` (created and removed)."""
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix=".ntkhgm-probe.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise InputError(f"{what} is not writable ({exc.strerror or exc})") from None
    os.close(fd)
    try:
        os.unlink(tmp)
    except OSError:
        pass


def write_array(path: str | os.PathLike | None, array: np.ndarray,
                header: Sequence[str] | None = None) -> Path | None:
    """Write ``array`` to ``path`` (.npy or CSV by suffix), atomically; None or ``-``: stdout.

    A ``.npy`` file holds the bare array (no header).
    """
    if path is None or str(path) == "-":
        sys.stdout.write(format_csv(array, header))
        sys.stdout.flush()
        return None
    p = check_output_path(path)
    try:
        if p.suffix.lower() == ".npy":
            arr = np.asarray(array, dtype=np.float64)
            return atomic_write(p, lambda fh: np.save(fh, arr, allow_pickle=False))
        return atomic_write_text(p, format_csv(array, header))
    except OSError as exc:
        raise InputError(f"{p}: cannot write output: {exc.strerror or exc}") from None
