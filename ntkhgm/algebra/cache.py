"""Pfaffian systems on disk: shipped catalog systems, user systems, and the compute pipeline.

Where a system is looked up (docs/math.md §4 systems, one file per activation and σ/σ';
locations from :mod:`ntkhgm.paths`):

- a **catalog** activation (``relu``, ``resin``, …, ``relu2`` … ``relu9``) reads only the
  shipped files (:func:`ntkhgm.paths.shipped_pfaffian_dir`), never the user cache, so
  nothing a user computes can change a catalog kernel;
- a **user** activation (any other name) reads only the user folder
  (:func:`ntkhgm.paths.user_pfaffian_dir`).  Catalog names are reserved: a user system
  cannot take one.

Parsed systems are memoised in-process by (path, size, mtime, inode), so repeated loads
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
from typing import TYPE_CHECKING

from ..activations import ACTIVATION_NAME as _NAME
from ..activations import is_catalog_name
from ..atomic import atomic_write_text
from ..errors import (
    AnnihilatorSyntaxError,
    BackendError,
    InputError,
    PfaffianFileError,
    UnknownActivationError,
)
from ..paths import shipped_pfaffian_dir, user_pfaffian_dir
from .annihilator import Annihilator, parse_annihilator

if TYPE_CHECKING:
    from .pfaffian import PfaffianSystem
# .pfaffian (the file format, its parser and checks) is imported where a system is read or
# built: asking whether a file exists, as every kernel does, need not load it

__all__ = ["load_pfaffian", "store_pfaffian", "has_pfaffian", "compute_pfaffian",
           "pfaffian_path", "resolve_annihilator", "list_user_activations"]

_MEMO: dict[tuple[str, int, int, int], PfaffianSystem] = {}
_LOCK = threading.Lock()
#: random points (modulo a 61-bit prime) of the default integrability check
MODP_POINTS = 4


def _stem(activation: str, derivative: bool) -> str:
    name = activation.strip().lower()
    if not _NAME.fullmatch(name) or name.endswith(".derivative"):
        raise InputError(f"invalid activation name {activation!r} (letters, digits, _ . + -)")
    return name + (".derivative" if derivative else "")


def _check_user_name(name: str) -> None:
    """A user system's name: valid and not a catalog name (those are reserved)."""
    if is_catalog_name(name):
        raise InputError(f"{name.strip().lower()!r} is a catalog activation name, reserved for "
                         "the shipped systems; choose another --name")


def pfaffian_path(activation: str, derivative: bool, directory: Path | None = None) -> Path:
    """Path of an entry's file in ``directory`` (default: where it is looked up)."""
    if directory is None:
        directory = shipped_pfaffian_dir() if is_catalog_name(activation) \
            else user_pfaffian_dir()
    return directory / f"{_stem(activation, derivative)}.json"


def load_file(path: Path) -> PfaffianSystem:
    """Load and validate one Pfaffian file (memoised by path, size, mtime and inode)."""
    from .pfaffian import MAX_FILE_BYTES, PfaffianSystem

    try:
        st = path.stat()
    except OSError as exc:
        raise PfaffianFileError(f"{path}: cannot read ({exc.strerror})") from None
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
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


def load_pfaffian(activation: str, derivative: bool) -> PfaffianSystem | None:
    """The Pfaffian of an activation (σ, or σ' when ``derivative``), or None.

    Catalog names read the shipped file only, other names the user folder only
    (module docstring).  A file that exists but fails validation raises
    PfaffianFileError (naming the file and what to do) instead of being used.
    """
    path = pfaffian_path(activation, derivative)
    if not path.is_file():
        return None
    try:
        system = load_file(path)
    except PfaffianFileError as exc:
        if is_catalog_name(activation):
            raise PfaffianFileError(f"{exc}; the shipped file is damaged: reinstall "
                                    "ntkhgm") from None
        flag = " --derivative" if derivative else ""
        raise PfaffianFileError(
            f"{exc}; delete it or recompute with `ntkhgm pfaffian --activation "
            f"{activation.strip().lower()}{flag} --force`") from None
    if system.activation != activation.strip().lower() or system.derivative != derivative:
        raise PfaffianFileError(f"{path}: holds {system.key}, not "
                                f"{_stem(activation, derivative)}")
    _check_derivation_input(system, path)
    return system


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
    """True when the entry's file exists where it is looked up (not validated)."""
    try:
        return pfaffian_path(activation, derivative).is_file()
    except InputError:
        return False


def list_user_activations() -> list[str]:
    """Names of the user activations with a σ or σ' system in the user folder, sorted.

    Files whose names are not valid activation names or are catalog names (left by
    an older version; never read) are skipped.
    """
    folder = user_pfaffian_dir()
    try:
        files = [p.name for p in folder.iterdir() if p.name.endswith(".json")]
    except OSError:
        return []
    names = set()
    for fname in files:
        stem = fname[: -len(".json")]
        stem = stem[: -len(".derivative")] if stem.endswith(".derivative") else stem
        if _NAME.fullmatch(stem) and stem == stem.lower() and not is_catalog_name(stem):
            names.add(stem)
    return sorted(names)


def store_pfaffian(system: PfaffianSystem, directory: str | os.PathLike | None = None) -> Path:
    """Write ``system`` atomically to the user folder (or ``directory``); return the path.

    Without ``directory`` a catalog system is refused: it would never be read.
    """
    if directory is None:
        _check_user_name(system.activation)
    d = Path(directory) if directory is not None else user_pfaffian_dir()
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


def _user_system(word: str, derivative: bool) -> PfaffianSystem | None:
    """The stored system of user activation ``word`` (None if there is none)."""
    key = word.strip().lower()
    if not _NAME.fullmatch(key) or key.endswith(".derivative") or is_catalog_name(key):
        return None
    return load_pfaffian(key, derivative)


def _resolve(text: str, derivative: bool, name: str | None,
             ) -> tuple[str, Annihilator, str | None, bool]:
    """(entry, annihilator, stored σ expression, is catalog) of a name or annihilator."""
    from ..activations import get_activation

    try:
        act = get_activation(text)
    except UnknownActivationError:
        act = None
    if act is None:
        word = text.strip()
        identifier = re.fullmatch(r"[A-Za-z][A-Za-z0-9_.+-]*", word) is not None and \
            word not in ("u", "du")
        if identifier:
            stored = _user_system(word, derivative)
            if stored is None:
                other = _user_system(word, not derivative)
                if other is not None:
                    what = "σ'" if derivative else "σ"
                    flag = "--derivative-annihilator" if derivative else "--annihilator"
                    raise UnknownActivationError(
                        f"user activation {word.lower()!r} has no {what} system; create it "
                        f"with `ntkhgm pfaffian --name {word.lower()} {flag} ...`")
                users = list_user_activations()
                raise UnknownActivationError(
                    f"{_unknown_message(text)}"
                    + (f"; user activations: {', '.join(users)}" if users else ""))
            if name is not None and name.strip().lower() != word.lower():
                raise InputError(f"{word!r} is a user activation; it cannot be renamed "
                                 f"to {name!r}")
            return word.lower(), parse_annihilator(stored.annihilator), stored.expression, False
        ann = parse_annihilator(text)
        entry = (name or "user").strip().lower()
        _stem(entry, derivative)
        _check_user_name(entry)
        return entry, ann, None, False
    if not act.holonomic:
        from ..errors import MethodUnavailableError

        raise MethodUnavailableError(
            f"{act.name} is not holonomic: no Pfaffian system exists (use quadrature)")
    ann_text = act.annihilator_of(derivative)
    if ann_text is None:  # pragma: no cover - catalog always has both
        raise AnnihilatorSyntaxError(f"{act.name}: no annihilator for σ'")
    entry = (name or act.name).strip().lower()
    _stem(entry, derivative)
    if entry != act.name:
        _check_user_name(entry)
    return entry, parse_annihilator(ann_text), None, entry == act.name


def _unknown_message(text: str) -> str:
    from ..activations import get_activation

    try:
        get_activation(text)
    except UnknownActivationError as exc:
        return str(exc)
    return f"unknown activation {text!r}"  # pragma: no cover - only called for unknown names


def resolve_annihilator(activation_name_or_annihilator: str, derivative: bool,
                        name: str | None = None) -> tuple[str, Annihilator]:
    """(entry name, annihilator of f) for a catalog name, a user activation's name
    (its stored annihilator) or an annihilator string (entry ``name``, not a catalog name).
    """
    entry, ann, _expr, _catalog = _resolve(activation_name_or_annihilator, derivative, name)
    return entry, ann


def make_backend(backend: str = "auto"):
    """A backend object: ``auto`` prefers Risa/Asir, then Singular."""
    from .backends import get_backend

    return get_backend(backend)


def compute_pfaffian(activation_name_or_annihilator: str, derivative: bool = False,
                     backend: str = "auto", force: bool = False, *, name: str | None = None,
                     store: bool = True, backend_obj=None, expression: str | None = None,
                     progress: Callable[[str, float], None] | None = None,
                     exact_check: bool = False,
                     verify: Callable[[PfaffianSystem], None] | None = None,
                     ) -> PfaffianSystem:
    """Compute (or serve from disk) the Pfaffian system of σ or σ' (docs/math.md §4).

    ``activation_name_or_annihilator`` is a catalog name, the name of a user activation
    (its stored annihilator and σ expression are reused), or an annihilator string
    (then ``name`` names the entry, and ``expression`` optionally gives f = σ or σ' as a
    safe expression for the initial values, checked against the annihilator away from
    u = 0 before any CAS runs).  Without ``force`` a stored entry with the same
    annihilator (and expression) is returned: the shipped one for a catalog name.

    A new system is checked before anything is stored: integrability at
    :data:`MODP_POINTS` random points modulo a 61-bit prime (milliseconds), with
    ``exact_check`` also exactly in sympy (minutes for rank 8), then ``verify`` (e.g.
    the numeric check against quadrature, which lives above this layer).  On any
    failure nothing is written.  A recomputed catalog system is returned, never
    stored (catalog activations read only the shipped files).
    """
    from .pfaffian import (
        PfaffianSystem,
        RationalFunction,
        check_integrability_exact,
        integrability_defect_modp,
    )

    entry, ann, stored_expr, catalog = _resolve(activation_name_or_annihilator, derivative,
                                                name)
    expr_text = None
    if expression is None:
        expression = stored_expr
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
    checks = [("integrability_modp", "integrability",
               lambda: integrability_defect_modp(system, tries=MODP_POINTS))]
    if exact_check:
        checks.append(("integrability_check", "exact check",
                       lambda: ", ".join(check_integrability_exact(system)[:3])))
    for key, label, check in checks:
        t1 = time.perf_counter()
        defect = check()
        if defect:
            raise BackendError(f"{be.name} produced a non-integrable Pfaffian system "
                               f"({defect}); nothing was stored")
        system.timings[key] = time.perf_counter() - t1
        if progress:
            progress(label, system.timings[key])
    # round-trip through the file format: what is stored is exactly what loads
    system = PfaffianSystem.from_json(system.to_json(), source="computed system")
    if verify is not None:
        verify(system)
    if store and not catalog:
        store_pfaffian(system)
    return system


def _pair(p):
    from fractions import Fraction

    num, den = p
    return ({tuple(m): Fraction(c) for m, c in num.items()},
            {tuple(m): Fraction(c) for m, c in den.items()})
