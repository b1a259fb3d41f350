"""Kernel outputs written tile by tile: ``.npy`` and ``.zarr`` out of core, resumable.

A run writes into ``<output>.partial`` (the ``.npy`` file at its full size, or the
zarr store) and appends one line per finished tile to ``<output>.progress``,
after the tile's data is written (and, for ``.npy``, flushed to disk): a tile
that was being written when the process died has no line and is computed again.
The first line of the progress file is a fingerprint of the inputs, options
and tiling; ``--resume`` continues only a run with the same fingerprint.  The
finished output is renamed into place; on an error (not an interruption) the
partial files are removed.

In-memory outputs (CSV, ``.txt``, ``.npz``, stdout) hold the whole K: their
size is checked against the available memory before any work.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .errors import InputError
from .kernels import Plan, in_memory_sink
from .tiling import Tile, available_memory, format_bytes, iter_blocks

TILED_SUFFIXES = (".npy", ".zarr")
MEMORY_SUFFIXES = (".csv", ".txt", ".npz")
CSV_BYTES_PER_VALUE = 40
"""Memory per value while a CSV is formatted (the text and the list of floats)."""
PROGRESS_VERSION = 1


def output_kind(output: str | None) -> str:
    """``npy``/``zarr`` (tiled, out of core), ``npz`` or ``text`` (in memory)."""
    if output is None or output == "-":
        return "text"
    suffix = Path(output).suffix.lower()
    return {".npy": "npy", ".zarr": "zarr", ".npz": "npz"}.get(suffix, "text")


def check_output(output: str | None, depths: tuple[int, ...]) -> None:
    """Fail before any work on an output that cannot hold the requested depths."""
    kind = output_kind(output)
    if len(depths) > 1 and kind not in ("npz", "zarr"):
        raise InputError(f"several depths ({','.join(map(str, depths))}) need an output "
                         "that holds several arrays: -o K.npz or -o K.zarr")
    if output is None or output == "-":
        return
    p = Path(output)
    known = TILED_SUFFIXES + MEMORY_SUFFIXES
    if p.suffix.lower() not in known:
        raise InputError(f"{p}: unsupported output format {p.suffix or '(no suffix)'!r}; "
                         f"use one of {', '.join(known)}")
    parent = p.parent if str(p.parent) else Path(".")
    if kind in ("zarr", "npz"):
        if not parent.is_dir():
            raise InputError(f"{p}: output folder {str(parent)!r} does not exist")
        if kind == "npz" and p.is_dir():
            raise InputError(f"{p}: is a directory")
        if kind == "zarr" and p.exists() and not _is_zarr(p):
            raise InputError(f"{p}: exists and is not a zarr store; not overwriting it")
        if not os.access(parent, os.W_OK):
            raise InputError(f"{p}: output folder {str(parent)!r} is not writable")
    else:
        from .io import check_output_path

        check_output_path(p)
        if not os.access(parent, os.W_OK):
            raise InputError(f"{p}: output folder {str(parent)!r} is not writable")


def _is_zarr(p: Path) -> bool:
    return p.is_dir() and any((p / m).exists() for m in ("zarr.json", ".zarray", ".zgroup"))


def check_size(output: str | None, shape: tuple[int, int], n_depths: int) -> None:
    """One-line error, before any work, when K does not fit where it is going."""
    n1, n2 = shape
    values = n1 * n2 * n_depths
    kind = output_kind(output)
    if kind in ("npy", "zarr"):
        need = 8 * values
        folder = Path(output).parent if str(Path(output).parent) else Path(".")
        free = shutil.disk_usage(folder).free
        partial = _partial(output)
        if partial.exists():  # resuming: that space is taken already
            free += _size_on_disk(partial)
        if need > free:
            raise InputError(f"the {n1}×{n2} kernel needs {format_bytes(need)} on disk for "
                             f"{output}; {format_bytes(free)} free in {str(folder)!r}")
        return
    need = 8 * values * (CSV_BYTES_PER_VALUE // 8 if kind == "text" else 1)
    avail = available_memory()
    if need > avail:
        what = "CSV output" if kind == "text" else f"{output}"
        raise InputError(f"the {n1}×{n2} kernel needs {format_bytes(need)} of memory for "
                         f"{what}, {format_bytes(avail)} available; write it out of core "
                         "with -o K.npy or -o K.zarr")


def _size_on_disk(p: Path) -> int:
    if p.is_file():
        return p.stat().st_blocks * 512
    return sum(f.stat().st_blocks * 512 for f in p.rglob("*") if f.is_file())


def _partial(output: str | os.PathLike) -> Path:
    p = Path(output)
    return p.with_name(p.name + ".partial")


def _progress_path(output: str | os.PathLike) -> Path:
    p = Path(output)
    return p.with_name(p.name + ".progress")


def resume_edge(output: str) -> int | None:
    """The tile edge of an interrupted run of ``output`` (None: nothing to resume)."""
    header = _read_progress(_progress_path(output))[0]
    edge = header.get("edge") if header else None
    return edge if isinstance(edge, int) and edge > 0 else None


def _read_progress(path: Path) -> tuple[dict | None, set[tuple[int, int]]]:
    """Header and finished tiles; a torn or malformed line (a kill mid-write) is ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None, set()
    lines = text.split("\n")
    done: set[tuple[int, int]] = set()
    try:
        header = json.loads(lines[0])
    except ValueError:
        return None, set()
    if not isinstance(header, dict) or header.get("version") != PROGRESS_VERSION:
        return None, set()
    for line in lines[1:-1]:  # the last piece has no newline: unfinished
        try:
            t = json.loads(line)["tile"]
            done.add((int(t[0]), int(t[1])))
        except (ValueError, KeyError, TypeError, IndexError):
            continue
    return header, done


class TiledOutput:
    """A resumable ``.npy`` or ``.zarr`` output written tile by tile."""

    def __init__(self, output: str, plan: Plan, resume: bool, *, compressed: bool = True):
        """``compressed=False``: zarr chunks stored raw (the cg solver reads K once per
        iteration; zstd, zarr's default, costs ~4× the read time for ~7 % of the space)."""
        self.compressors = "auto" if compressed else None
        self.output = Path(output)
        self.kind = output_kind(output)
        self.plan = plan
        self.partial = _partial(output)
        self.progress = _progress_path(output)
        header = {"version": PROGRESS_VERSION, "fingerprint": plan.fingerprint(),
                  "edge": plan.edge, "format": self.kind, "shape": list(plan.shape),
                  "depths": list(plan.rec.depths)}
        self.done: set[tuple[int, int]] = set()
        old, done = _read_progress(self.progress) if resume else (None, set())
        if resume and old is not None and self.partial.exists():
            if old.get("fingerprint") != header["fingerprint"]:
                raise InputError(f"--resume: {self.partial} was written by a different command "
                                 "(inputs, options or tile size differ); rerun without --resume")
            self._open(create=False)
            self.done = done & {t.index for t in plan.tiles}
        else:
            self._open(create=True)
            with open(self.progress, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(header) + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    # -- storage
    def _open(self, create: bool) -> None:
        n1, n2 = self.plan.shape
        if self.kind == "npy":
            if create:
                self._remove_partial()
                # the header and a sparse file of the full size; no page of K is touched
                mm = np.lib.format.open_memmap(self.partial, mode="w+", dtype="<f8",
                                               shape=(n1, n2))
                del mm
            self.fd = os.open(self.partial, os.O_RDWR)
            self.offset = self._npy_offset(n1, n2)
            return
        import zarr

        edge = self.plan.edge
        depths = self.plan.rec.depths
        if create:
            self._remove_partial()
            if len(depths) == 1:
                arr = zarr.create_array(store=str(self.partial), shape=(n1, n2),
                                        chunks=(edge, edge), dtype="f8",
                                        compressors=self.compressors)
                self.arrays = {depths[0]: arr}
            else:
                g = zarr.open_group(str(self.partial), mode="w")
                g.attrs["depths"] = list(depths)
                self.arrays = {d: g.create_array(f"depth_{d}", shape=(n1, n2),
                                                 chunks=(edge, edge), dtype="f8",
                                                 compressors=self.compressors)
                               for d in depths}
            return
        try:
            if len(depths) == 1:
                self.arrays = {depths[0]: zarr.open_array(str(self.partial), mode="r+")}
            else:
                g = zarr.open_group(str(self.partial), mode="r+")
                self.arrays = {d: g[f"depth_{d}"] for d in depths}
        except Exception as exc:  # a damaged partial store: start again without --resume
            raise InputError(f"--resume: cannot open {self.partial} ({exc}); "
                             "rerun without --resume") from None
        for arr in self.arrays.values():
            if tuple(arr.shape) != (n1, n2) or tuple(arr.chunks) != (edge, edge):
                raise InputError(f"--resume: {self.partial} has another shape or chunking; "
                                 "rerun without --resume")

    def _npy_offset(self, n1: int, n2: int) -> int:
        with open(self.partial, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(fh)
            offset = fh.tell()
        size = os.fstat(self.fd).st_size
        if (tuple(shape) != (n1, n2) or fortran or dtype != np.dtype("<f8")
                or size != offset + 8 * n1 * n2):
            raise InputError(f"--resume: {self.partial} is not the partial kernel of this "
                             "command; rerun without --resume")
        return offset

    def _remove_partial(self) -> None:
        if self.partial.is_dir():
            shutil.rmtree(self.partial)
        elif self.partial.exists():
            self.partial.unlink()

    # -- tiles
    def write(self, tile: Tile, result: dict[int, np.ndarray]) -> None:
        """Write one tile (both blocks of a symmetric K), then record it as finished."""
        n2 = self.plan.shape[1]
        for d, block in result.items():
            for r, c, transposed in iter_blocks(tile, self.plan.symmetric):
                b = block.T if transposed else block
                if self.kind == "npy":
                    for i in range(b.shape[0]):
                        row = np.ascontiguousarray(b[i], dtype="<f8")
                        os.pwrite(self.fd, row.tobytes(), self.offset + 8 * ((r + i) * n2 + c))
                else:
                    self.arrays[d][r:r + b.shape[0], c:c + b.shape[1]] = b
        if self.kind == "npy":
            os.fdatasync(self.fd)
        with open(self.progress, "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"tile": list(tile.index)}) + "\n")
        self.done.add(tile.index)

    def finish(self) -> None:
        """Move the complete output into place and drop the progress file."""
        if self.kind == "npy":
            os.close(self.fd)
            os.replace(self.partial, self.output)
        else:
            if self.output.exists():
                if not _is_zarr(self.output):
                    raise InputError(f"{self.output}: exists and is not a zarr store")
                shutil.rmtree(self.output)
            os.replace(self.partial, self.output)
        self.progress.unlink(missing_ok=True)

    def discard(self) -> None:
        """Remove the partial output (after an error that a rerun would repeat)."""
        if self.kind == "npy":
            try:
                os.close(self.fd)
            except OSError:
                pass
        self._remove_partial()
        self.progress.unlink(missing_ok=True)


def write_in_memory(output: str | None, K: dict[int, np.ndarray], write_text) -> None:
    """``.npz`` (arrays ``depth_<L>``) atomically, or one matrix through ``write_text``."""
    if output_kind(output) == "npz":
        from .atomic import atomic_write

        arrays = {f"depth_{d}": v for d, v in K.items()}
        atomic_write(output, lambda fh: np.savez(fh, **arrays))
        return
    (only,) = K.values()
    write_text(output, only)


__all__ = ["TiledOutput", "check_output", "check_size", "in_memory_sink", "output_kind",
           "resume_edge", "write_in_memory"]
