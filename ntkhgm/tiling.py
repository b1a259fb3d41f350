"""Tiles of a kernel matrix and the memory budget that sizes them (issue 10).

A kernel K(X1, X2) is computed as independent square blocks of pairs ("tiles"),
each running the whole depth-L recursion for its pairs (:mod:`ntkhgm.kernels`).
The tile edge comes from a memory budget: ``memory=`` / ``--memory``, else
``NTKHGM_MEMORY``, else :func:`default_budget`.  The budget is the peak resident
memory the computation may reach; what the process already holds is taken off
before the tiles are sized.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from .errors import InputError

BYTES_PER_PAIR = {"closed": 256, None: 1536}
"""Working memory of one pair in a tile, by σ's dual method: the flattened pair
arrays of the recursion (Σ, Θ, a, b, c, masks, index arrays), the evaluators'
temporaries and the tile's output block.  Measured with tracemalloc at depth 3
(benchmarks/scale.py): closed forms (relu, erf) 134–182 bytes, hgm 670–1390
(gelu, resin); rounded up."""

RESERVE = {"quad": 1200 << 20, None: 64 << 20}
"""Memory an evaluator takes whatever the tile size, by method: the reference
quadrature works on blocks of 2·10⁷ nodes (1.1 GB measured)."""

MIN_TILE = 32
DEFAULT_MAX_WORK = 1 << 30
"""Default cap of a tile's working memory (1 GiB): larger tiles run no faster per
pair (measured, benchmarks/README.md), so a larger default would only cost memory."""
DEFAULT_FRACTION = 0.25

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "t": 1e12, "tb": 1e12, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
          "tib": 1 << 40}
_MEMORY_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*")


def parse_memory(text: str | int | float, what: str = "memory") -> int:
    """Bytes from ``2GB``, ``1.5G``, ``512MiB``, ``800M`` or a plain number of bytes."""
    if isinstance(text, bool):
        raise InputError(f"{what}: expected a size such as 2GB or 512MiB, got {text!r}")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = _MEMORY_RE.fullmatch(str(text))
        unit = m.group(2).lower() if m else None
        if m is None or unit not in _UNITS:
            raise InputError(f"{what}: expected a size such as 2GB, 1.5G or 512MiB, "
                             f"got {str(text)[:40]!r}")
        value = float(m.group(1)) * _UNITS[unit]
    if not value >= 1 << 20 or value > 1 << 50:
        raise InputError(f"{what}: {text!r} is out of range (1 MiB to 1 PiB)")
    return int(value)


def format_bytes(n: float) -> str:
    """``1.2 GB`` style (decimal units, as ``--memory`` reads them)."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def available_memory() -> int:
    """Memory available to a new allocation without swapping (psutil)."""
    import psutil

    return int(psutil.virtual_memory().available)


def current_rss() -> int:
    """This process's resident memory now."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def memory_model(methods) -> tuple[int, int]:
    """(bytes per pair, fixed reserve) of a tile for these dual methods (σ, σ')."""
    methods = [m for m in methods if m is not None]
    per_pair = max(BYTES_PER_PAIR.get(m, BYTES_PER_PAIR[None]) for m in methods)
    reserve = max(RESERVE.get(m, RESERVE[None]) for m in methods)
    return per_pair, reserve


def default_budget(held: int, workers: int = 1, reserve: int = RESERVE[None]) -> int:
    """What is held plus, per worker, the evaluators' reserve and tiles of a quarter of
    the available memory, at most 1 GiB."""
    work = min(DEFAULT_FRACTION * available_memory() / max(1, workers), DEFAULT_MAX_WORK)
    return int(held + workers * (reserve + work))


def memory_budget(memory: str | int | float | None) -> int | None:
    """The budget in bytes: the argument, else ``NTKHGM_MEMORY``, else None (default)."""
    if memory is not None:
        return parse_memory(memory, "--memory")
    env = os.environ.get("NTKHGM_MEMORY")
    if env is not None and env.strip() != "":
        return parse_memory(env, "NTKHGM_MEMORY")
    return None


def tile_edge(budget: int | None, held: int, *, methods=("closed",), workers: int = 1,
              n_depths: int = 1) -> int:
    """Largest tile edge t whose t² pairs fit the budget beside ``held`` bytes.

    ``workers`` tiles run at once (one per local worker process, each with its
    own evaluator reserve); each tile also holds one output block per depth.
    Raises InputError when not even a MIN_TILE² tile fits.
    """
    per_pair, reserve = memory_model(methods)
    per_pair += 8 * max(0, n_depths - 1)
    if budget is None:
        budget = default_budget(held, workers, reserve)
    per_worker = (budget - held) / max(1, workers) - reserve
    edge = int((max(per_worker, 0.0) / per_pair) ** 0.5)
    if edge < MIN_TILE:
        need = held + workers * (reserve + MIN_TILE ** 2 * per_pair)
        raise InputError(f"memory budget {format_bytes(budget)} is too small: at least "
                         f"{format_bytes(need)} is needed (set --memory or NTKHGM_MEMORY)")
    return edge


@dataclass(frozen=True)
class Tile:
    """Rows r0:r1 of X1 against rows c0:c1 of X2; ``diagonal``: a block of K(X, X)
    on its diagonal (computed as its upper triangle, mirrored)."""

    index: tuple[int, int]
    r0: int
    r1: int
    c0: int
    c1: int
    diagonal: bool

    @property
    def pairs(self) -> int:
        n1, n2 = self.r1 - self.r0, self.c1 - self.c0
        return n1 * (n1 - 1) // 2 if self.diagonal else n1 * n2


def tile_grid(n1: int, n2: int, edge: int, symmetric: bool) -> list[Tile]:
    """The tiles covering K (n1 × n2); for a symmetric K only the blocks on and above
    the diagonal (a block below is the transpose of one above)."""
    edge = max(1, int(edge))
    tiles = []
    for bi, r0 in enumerate(range(0, n1, edge)):
        for bj, c0 in enumerate(range(0, n2, edge)):
            if symmetric and bj < bi:
                continue
            tiles.append(Tile((bi, bj), r0, min(n1, r0 + edge), c0, min(n2, c0 + edge),
                              symmetric and bi == bj))
    return tiles


def iter_blocks(tile: Tile, symmetric: bool) -> Iterator[tuple[int, int, bool]]:
    """Where a tile's block goes in K: (row, column, transposed?) — twice for an
    off-diagonal block of a symmetric K."""
    yield tile.r0, tile.c0, False
    if symmetric and not tile.diagonal:
        yield tile.c0, tile.r0, True
