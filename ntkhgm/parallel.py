"""Tiles on a Dask cluster (issue 10): a local cluster of processes or dask.distributed.

``--jobs N`` starts a :class:`distributed.LocalCluster` of N single-threaded
worker processes; ``--scheduler ADDRESS`` (or ``DASK_SCHEDULER_ADDRESS``)
connects to a cluster started with ``dask scheduler`` / ``dask worker ADDRESS``.
Each task is one tile: the recursion (activation, methods, options), the
tile's rows with their per-layer values and, for a user activation, its
Pfaffian files travel with it, so a worker needs only the package.  Results
come back to the calling process, which writes them; at most a few tiles per
worker are in flight, so the caller holds only those.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from .errors import InputError
from .kernels import Plan, compute_tile
from .tiling import Tile

IN_FLIGHT_PER_WORKER = 2
CONNECT_TIMEOUT = "10s"


def _distributed():
    try:
        import distributed
    except ImportError:  # pragma: no cover - a core dependency; a broken install
        raise InputError("Dask is not installed: pip install 'dask[distributed]'") from None
    return distributed


def n_workers(client) -> int:
    """Workers currently known to the scheduler (at least 1)."""
    try:
        return max(1, len(client.scheduler_info().get("workers", {})))
    except Exception:  # an unusual client object: assume one
        return 1


def user_pfaffian_files(act) -> dict[bool, str]:
    """The cached Pfaffian files of a user activation (``ntkhgm pfaffian --name``), as text,
    to travel with each task; empty for a catalog activation (shipped with the package)."""
    from .activations import get_activation
    from .errors import UnknownActivationError

    try:
        get_activation(act.name)
        return {}
    except UnknownActivationError:
        pass
    from .algebra.cache import pfaffian_path

    files = {}
    for derivative in (False, True):
        try:
            files[derivative] = pfaffian_path(act.name, derivative).read_text(encoding="utf-8")
        except OSError:
            continue
    return files


def _install_pfaffians(name: str, files: dict[bool, str]) -> None:
    """On a worker: put a user activation's Pfaffian files into its cache if it lacks them
    (they are validated like any cached file when loaded)."""
    if not files:
        return
    from .algebra.cache import has_pfaffian, pfaffian_path
    from .atomic import atomic_write_text

    for derivative, text in files.items():
        if not has_pfaffian(name, derivative=derivative):
            path = pfaffian_path(name, derivative)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(path, text)


def remote_tile(rec, A, B, files: dict[bool, str]) -> dict[int, np.ndarray]:
    """One tile on a worker: the user activation's Pfaffians first, then the recursion."""
    _install_pfaffians(rec.act.name, files)
    return compute_tile(rec, A, B)


def map_tiles(client, plan: Plan, tiles: list[Tile]) -> Iterator[tuple[Tile, dict]]:
    """Yield (tile, result) as tiles finish on the cluster, a bounded number in flight.

    Largest tiles first (a symmetric K's diagonal tiles have half the pairs), so that
    the last tiles to finish are the small ones and the workers end together.
    """
    distributed = _distributed()
    files = user_pfaffian_files(plan.rec.act)
    window = IN_FLIGHT_PER_WORKER * n_workers(client)
    pending = iter(sorted(tiles, key=lambda t: -t.pairs))
    futures = {}
    queue = distributed.as_completed(loop=client.loop)  # the client need not be the default

    def submit_next() -> bool:
        t = next(pending, None)
        if t is None:
            return False
        A, B = plan.tile_inputs(t)
        f = client.submit(remote_tile, plan.rec, A, B, files, pure=False,
                          key=f"ntkhgm-tile-{t.index[0]}-{t.index[1]}-{os.urandom(4).hex()}")
        futures[f.key] = t
        queue.add(f)
        return True

    for _ in range(window):
        if not submit_next():
            break
    try:
        for f in queue:
            t = futures.pop(f.key)
            result = f.result()  # re-raises a worker's error (an NtkhgmError) here
            f.release()
            submit_next()
            yield t, result
    finally:
        for key in list(futures):
            try:
                client.cancel(key)
            except Exception:  # cancelling is best effort on the way out
                pass


def _warm_up() -> None:
    """On a worker: import what a tile needs (~2 s), while the caller plans the tiles."""
    from . import kernels  # noqa: F401


def warm_up(client) -> list:
    """One import task per worker, not waited for; keep the returned futures alive
    until the tiles are submitted (a released future may be cancelled)."""
    try:
        workers = list(client.scheduler_info().get("workers", {}))
        return [client.submit(_warm_up, pure=False, workers=[w], allow_other_workers=False,
                              key=f"ntkhgm-warm-up-{i}-{os.urandom(4).hex()}")
                for i, w in enumerate(workers)]
    except Exception:  # best effort: the first tile imports the same
        return []


@contextmanager
def cluster_client(jobs: int = 1, scheduler: str | None = None) -> Iterator[object | None]:
    """A Dask client for ``--jobs`` / ``--scheduler`` (None: compute in this process)."""
    if scheduler is None:
        scheduler = os.environ.get("DASK_SCHEDULER_ADDRESS") or None
        if scheduler is not None and jobs > 1:
            scheduler = None  # an explicit --jobs wins over the environment
    if scheduler is not None and jobs > 1:
        raise InputError("--jobs and --scheduler exclude each other: --jobs starts a local "
                         "cluster, --scheduler uses an existing one")
    if scheduler is None and jobs <= 1:
        yield None
        return
    distributed = _distributed()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT,
                                        set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            raise InputError(f"cannot reach the Dask scheduler at {scheduler!r}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                             ) from None
        try:
            yield client
        finally:
            client.close()
        return
    import dask

    # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in workers, which turns off
    # glibc's adaptive mmap threshold: every large temporary array of a tile is then
    # a fresh mmap, and page faults cost as much system time as the user time saved
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", {}))
    environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
        cluster = distributed.LocalCluster(n_workers=int(jobs), threads_per_worker=1,
                                           processes=True, dashboard_address=":0",
                                           host="127.0.0.1", silence_logs=50)
    try:
        client = distributed.Client(cluster, set_as_default=False)
        try:
            warming = warm_up(client)  # noqa: F841 - held while the caller plans
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


def dask_kernel(X1, X2=None, **kw):
    """K(X1, X2) as a lazy dask array, one chunk per tile: ``ntkhgm.kernel``'s arguments
    (``depth`` an int); compute it with any Dask scheduler (``.compute()``, ``client``)."""
    from .kernels import plan_kernel

    if not isinstance(kw.get("depth"), (int, np.integer)):
        raise InputError("dask_kernel: depth must be one int")
    plan, _ = plan_kernel(X1, X2, **kw)
    return as_dask_array(plan)


def as_dask_array(plan: Plan, depth: int | None = None):
    """K of one depth as a lazy dask array, one chunk per tile (each tile computed once)."""
    import dask
    import dask.array as da

    depth = plan.rec.depth if depth is None else depth
    if depth not in plan.rec.depths:
        raise InputError(f"depth {depth} was not requested ({plan.rec.depths})")
    n1, n2 = plan.shape
    edge = plan.edge
    files = user_pfaffian_files(plan.rec.act)
    tiles = {t.index: dask.delayed(_tile_block)(plan.rec, *plan.tile_inputs(t), depth, files)
             for t in plan.tiles}
    rows = []
    for bi, r0 in enumerate(range(0, n1, edge)):
        row = []
        for bj, c0 in enumerate(range(0, n2, edge)):
            shape = (min(n1, r0 + edge) - r0, min(n2, c0 + edge) - c0)
            if plan.symmetric and bj < bi:  # below the diagonal: a transposed tile
                block = da.from_delayed(tiles[(bj, bi)], shape=shape[::-1],
                                        dtype=np.float64).T
            else:
                block = da.from_delayed(tiles[(bi, bj)], shape=shape, dtype=np.float64)
            row.append(block)
        rows.append(row)
    return da.block(rows)


def _tile_block(rec, A, B, depth: int, files: dict[bool, str]) -> np.ndarray:
    return remote_tile(rec, A, B, files)[depth]
