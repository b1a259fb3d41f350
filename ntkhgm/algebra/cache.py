"""Pfaffian cache: user cache, shipped ``data/pfaffians/``, and the compute pipeline.

Lookup order (math.md §4 systems, one file per activation and σ/σ'):

1. the user cache: ``$NTKHGM_CACHE_DIR``, else ``$XDG_CACHE_HOME/ntkhgm``, else
   ``~/.cache/ntkhgm`` (files ``<name>.json`` / ``<name>.derivative.json``);
2. the shipped files in ``data/pfaffians/`` of the repository (``$NTKHGM_DATA_DIR``
   overrides).

Parsed systems are memoised in-process by (path, size, mtime), so repeated loads
cost a ``stat``.  Every write is atomic (temporary file + rename) and happens only
after a complete, verified computation: a failure never leaves a partial entry,
and concurrent writers of the same entry leave one valid file.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import (
    AnnihilatorSyntaxError,
    BackendError,
    InputError,
    PfaffianFileError,
    UnknownActivationError,
)
from .annihilator import Annihilator, parse_annihilator
from .pfaffian import (
    _NAME,
    MAX_FILE_BYTES,
    PfaffianSystem,
    RationalFunction,
    check_integrability_exact,
)

__all__ = ["load_pfaffian", "store_pfaffian", "has_pfaffian", "compute_pfaffian",
           "user_cache_dir", "data_dir", "pfaffian_path", "resolve_annihilator"]

_MEMO: dict[tuple[str, int, int], PfaffianSystem] = {}
_LOCK = threading.Lock()


def user_cache_dir() -> Path:
    """The user cache directory (not created)."""
    env = os.environ.get("NTKHGM_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "ntkhgm"


def data_dir() -> Path:
    """The shipped Pfaffians: ``$NTKHGM_DATA_DIR`` or ``<repo>/data/pfaffians``."""
    env = os.environ.get("NTKHGM_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "data" / "pfaffians"


def _stem(activation: str, derivative: bool) -> str:
    name = activation.strip().lower()
    if not _NAME.fullmatch(name) or name.endswith(".derivative"):
        raise InputError(f"invalid activation name {activation!r} (letters, digits, _ . + -)")
    return name + (".derivative" if derivative else "")


def pfaffian_path(activation: str, derivative: bool, directory: Path | None = None) -> Path:
    """Path of the cache file of an entry in ``directory`` (default: user cache)."""
    return (directory or user_cache_dir()) / f"{_stem(activation, derivative)}.json"


def load_file(path: Path) -> PfaffianSystem:
    """Load and validate one Pfaffian file (memoised by path, size and mtime)."""
    try:
        st = path.stat()
    except OSError as exc:
        raise PfaffianFileError(f"{path}: cannot read ({exc.strerror})") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _LOCK:
        hit = _MEMO.get(key)
    if hit is not None:
        return hit
    if st.st_size > MAX_FILE_BYTES:  # before reading it: a huge file costs nothing
        raise PfaffianFileError(f"{path}: file too large ({st.st_size} bytes > "
                                f"{MAX_FILE_BYTES})")
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_FILE_BYTES + 1)  # bounded even if it grew since the stat
    except OSError as exc:
        raise PfaffianFileError(f"{path}: cannot read ({exc.strerror})") from None
    system = PfaffianSystem.from_json(data, source=str(path))
    with _LOCK:
        _MEMO[key] = system
    return system


def _candidates(activation: str, derivative: bool) -> list[Path]:
    stem = _stem(activation, derivative)
    return [user_cache_dir() / f"{stem}.json", data_dir() / f"{stem}.json"]


def load_pfaffian(activation: str, derivative: bool) -> PfaffianSystem | None:
    """The cached Pfaffian of an activation (σ, or σ' when ``derivative``), or None.

    A file that exists but fails validation raises PfaffianFileError (naming the
    file and how to recompute it) instead of being used.
    """
    for path in _candidates(activation, derivative):
        if path.is_file():
            try:
                system = load_file(path)
            except PfaffianFileError as exc:
                flag = " --derivative" if derivative else ""
                raise PfaffianFileError(
                    f"{exc}; delete it or recompute with `ntkhgm pfaffian --activation "
                    f"{activation}{flag} --force`") from None
            if system.activation != activation.strip().lower() or \
                    system.derivative != derivative:
                raise PfaffianFileError(f"{path}: holds {system.key}, not "
                                        f"{_stem(activation, derivative)}")
            _check_derivation_input(system, path)
            return system
    return None


def _check_derivation_input(system: PfaffianSystem, path: Path) -> None:
    """A catalog entry's file must be derived from the catalog's own annihilator."""
    from ..activations import get_activation

    try:
        act = get_activation(system.activation)
    except UnknownActivationError:
        return  # a user activation: its σ expression is checked against the system later
    expected = act.annihilator_of(system.derivative)
    if expected is not None and parse_annihilator(expected).text() != system.annihilator:
        raise PfaffianFileError(f"{path}: derived from the annihilator {system.annihilator}, "
                                f"not {act.name}'s {parse_annihilator(expected).text()}")


def has_pfaffian(activation: str, derivative: bool) -> bool:
    """True when a cached or shipped file exists for the entry (not validated)."""
    try:
        return any(p.is_file() for p in _candidates(activation, derivative))
    except InputError:
        return False


def store_pfaffian(system: PfaffianSystem, directory: str | os.PathLike | None = None) -> Path:
    """Write ``system`` atomically to the user cache (or ``directory``); return the path."""
    d = Path(directory) if directory is not None else user_cache_dir()
    if d.is_symlink():
        # the cache is written by ntkhgm alone; a link may point into a system folder
        raise InputError(f"cache folder {d} is a symbolic link; ntkhgm does not write "
                         "through it (set NTKHGM_CACHE_DIR to a real folder)")
    try:
        d.mkdir(parents=True, exist_ok=True)
        path = pfaffian_path(system.activation, system.derivative, d)
        atomic_write_text(path, system.to_json())
    except OSError as exc:
        raise InputError(f"cannot write to the cache folder {d} "
                         f"({exc.strerror or exc}); set NTKHGM_CACHE_DIR to a writable "
                         "folder") from None
    return path


def resolve_annihilator(activation_name_or_annihilator: str, derivative: bool,
                        name: str | None = None) -> tuple[str, Annihilator]:
    """(entry name, annihilator of f) for a catalog name or an annihilator string."""
    from ..activations import get_activation

    text = activation_name_or_annihilator
    try:
        act = get_activation(text)
    except UnknownActivationError:
        word = text.strip()
        if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", word) and word not in ("u", "du"):
            raise
        ann = parse_annihilator(text)
        entry = (name or "user").strip().lower()
        _stem(entry, derivative)
        return entry, ann
    if not act.holonomic:
        from ..errors import MethodUnavailableError

        raise MethodUnavailableError(
            f"{act.name} is not holonomic: no Pfaffian system exists (use quadrature)")
    ann_text = act.annihilator_of(derivative)
    if ann_text is None:  # pragma: no cover - catalog always has both
        raise AnnihilatorSyntaxError(f"{act.name}: no annihilator for σ'")
    entry = (name or act.name).strip().lower()
    _stem(entry, derivative)
    return entry, parse_annihilator(ann_text)


def make_backend(backend: str = "auto"):
    """A backend object: ``auto`` prefers Risa/Asir, then Singular."""
    from .backends import get_backend

    return get_backend(backend)


def compute_pfaffian(activation_name_or_annihilator: str, derivative: bool = False,
                     backend: str = "auto", force: bool = False, *, name: str | None = None,
                     store: bool = True, backend_obj=None, expression: str | None = None,
                     progress: Callable[[str, float], None] | None = None) -> PfaffianSystem:
    """Compute (or serve from the cache) the Pfaffian system of σ or σ' (math.md §4).

    ``activation_name_or_annihilator`` is a catalog name or an annihilator string
    (then ``name`` names the entry, and ``expression`` optionally gives f = σ or σ' as a
    safe expression for the initial values, checked against the annihilator away from
    u = 0 before any CAS runs).  Without ``force`` a cached entry with the same
    annihilator (and expression) is returned.  A new system is checked exactly for integrability
    (sympy) before it is stored; on any failure nothing is written.
    """
    entry, ann = resolve_annihilator(activation_name_or_annihilator, derivative, name)
    expr_text = None
    if expression is not None:
        from .sigma_expr import check_annihilates, parse_sigma

        parsed = parse_sigma(expression)
        check_annihilates(ann, parsed)
        expr_text = parsed.text
    if not force:
        cached = load_pfaffian(entry, derivative)
        if cached is not None and cached.annihilator == ann.text() and \
                (expr_text is None or cached.expression == expr_text):
            if progress:
                progress("cache", 0.0)
            return cached
    own = backend_obj is None
    be = make_backend(backend) if own else backend_obj
    try:
        t0 = time.perf_counter()
        result = be.pfaffian(ann, progress=progress)
        version = be.version()
    finally:
        if own:
            be.close()
    std = [tuple(m) for m in result.std_monomials]
    if (0, 0, 0) not in std:
        raise BackendError(f"{be.name}: 1 is not a standard monomial")
    order = sorted(range(len(std)), key=lambda i: std[i] != (0, 0, 0))  # stable: 1 first
    mats = {}
    for k, rows in result.matrices.items():
        mats[k] = tuple(tuple(RationalFunction(*_pair(rows[a][b])) for b in order)
                        for a in order)
    timings = dict(result.timings)
    timings["total"] = time.perf_counter() - t0
    system = PfaffianSystem(activation=entry, derivative=derivative, annihilator=ann.text(),
                            std_monomials=tuple(std[i] for i in order), matrices=mats,
                            backend=be.name, backend_version=version, timings=timings,
                            expression=expr_text)
    t1 = time.perf_counter()
    fails = check_integrability_exact(system)
    if fails:
        raise BackendError(f"{be.name} produced a non-integrable Pfaffian system "
                           f"({', '.join(fails[:3])}); nothing was stored")
    system.timings["integrability_check"] = time.perf_counter() - t1
    if progress:
        progress("integrability", system.timings["integrability_check"])
    # round-trip through the file format: what is stored is exactly what loads
    system = PfaffianSystem.from_json(system.to_json(), source="computed system")
    if store:
        store_pfaffian(system)
    return system


def _pair(p):
    from fractions import Fraction

    num, den = p
    return ({tuple(m): Fraction(c) for m, c in num.items()},
            {tuple(m): Fraction(c) for m, c in den.items()})
