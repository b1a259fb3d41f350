"""ntkhgm.paths (issue 11): every file location, package data, the user cache lookup."""

from __future__ import annotations

import fnmatch
import os
import re
from pathlib import Path

from conftest import ROOT

from ntkhgm import paths
from ntkhgm.algebra.backends.asir import find_libdir


def test_cache_dir_lookup_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("NTKHGM_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert paths.user_cache_dir() == tmp_path / "c"
    assert paths.user_pfaffian_dir() == tmp_path / "c"
    monkeypatch.setenv("NTKHGM_CACHE_DIR", "  ")          # empty: ignored
    assert paths.user_cache_dir() == tmp_path / "xdg" / "ntkhgm"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec: ignore relative
    assert paths.user_cache_dir() == tmp_path / "home" / ".cache" / "ntkhgm"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("NTKHGM_CACHE_DIR", "~/mycache")
    assert paths.user_cache_dir() == tmp_path / "home" / "mycache"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NTKHGM_CACHE_DIR", "rel")
    assert paths.user_cache_dir() == tmp_path / "rel"   # absolute, whatever the cwd later


def test_shipped_files_are_package_data(monkeypatch):
    monkeypatch.delenv("NTKHGM_DATA_DIR", raising=False)
    shipped = paths.shipped_pfaffian_dir()
    import ntkhgm

    package = Path(ntkhgm.__file__).parent
    assert shipped == package / "data" / "pfaffians"
    assert (shipped / "relu.json").is_file() and (shipped / "resin.derivative.json").is_file()
    assert paths.asir_script() == package / "asir_scripts" / "ntkhgm.rr"
    assert paths.asir_script().read_text().startswith("/* ntkhgm")


def test_data_dir_override(tmp_path, monkeypatch):
    monkeypatch.setenv("NTKHGM_DATA_DIR", str(tmp_path))
    assert paths.shipped_pfaffian_dir() == tmp_path


def test_pyproject_package_data_covers_every_shipped_file():
    text = (ROOT / "pyproject.toml").read_text()   # (tomllib is Python ≥ 3.11 only)
    block = re.search(r"\[tool\.setuptools\.package-data\]\s*ntkhgm = \[(.*?)\]", text, re.S)
    globs = re.findall(r'"([^"]+)"', block.group(1))
    package = ROOT / "ntkhgm"
    shipped = [p for p in (package / "data").rglob("*") if p.is_file() and p.suffix == ".json"]
    shipped += list((package / "asir_scripts").glob("*.rr"))
    assert len(shipped) >= 17
    for p in shipped:
        rel = p.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, g) and rel.count("/") == g.count("/") for g in globs), rel


def test_top_level_links_point_into_the_package():
    # the design card's asir_scripts/ and data/pfaffians stay, as links (one source of truth)
    for link, target in (("asir_scripts/ntkhgm.rr", "ntkhgm/asir_scripts/ntkhgm.rr"),
                         ("data/pfaffians", "ntkhgm/data/pfaffians")):
        assert (ROOT / link).is_symlink()
        assert (ROOT / link).resolve() == (ROOT / target).resolve()


def test_asir_libdir_lookup(tmp_path, monkeypatch):
    for var in ("ASIR_LIBDIR", "OpenXM_HOME"):
        monkeypatch.delenv(var, raising=False)
    assert find_libdir(None) is None
    home = tmp_path / "OpenXM"
    (home / "lib" / "asir").mkdir(parents=True)
    (home / "bin").mkdir()
    monkeypatch.setenv("OpenXM_HOME", str(home))
    assert find_libdir(None) is None                     # no glib there: not a library
    (home / "lib" / "asir" / "glib").write_text("")
    assert find_libdir(None) == home / "lib" / "asir"
    monkeypatch.delenv("OpenXM_HOME")
    exe = home / "bin" / "asir"
    exe.write_text("")
    assert find_libdir(str(exe)) == home / "lib" / "asir"   # ../lib/asir beside the binary
    own = tmp_path / "mylib"
    own.mkdir()
    (own / "glib").write_text("")
    monkeypatch.setenv("ASIR_LIBDIR", str(own))
    assert find_libdir(str(exe)) == own


def test_tests_never_see_the_real_home_cache():
    home_cache = Path(os.path.expanduser("~")) / ".cache" / "ntkhgm"
    assert paths.user_cache_dir() != home_cache
    assert not str(paths.user_cache_dir()).startswith(str(Path.home() / ".cache"))
