"""``ntkhgm pfaffian`` (issue 3 §1, §3, §4): cache serving, checks, user errors → exit 2."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from ntkhgm.cli import main


def run(args, tmp_path, **env_extra):
    """Run in-process (subprocess runs are covered in test_backend_singular)."""
    try:
        runner = CliRunner(mix_stderr=False)  # click 8.1
    except TypeError:
        runner = CliRunner()
    env = {"NTKHGM_CACHE_DIR": str(tmp_path / "cache"), "NO_COLOR": "1", **env_extra}
    res = runner.invoke(main, ["pfaffian", *args], env=env)
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return SimpleNamespace(returncode=res.exit_code, stdout=res.stdout, stderr=res.stderr)


def test_served_from_shipped_files_without_any_cas(tmp_path):
    r = run(["--activation", "resin", "--derivative"], tmp_path,
            NTKHGM_SINGULAR="/nonexistent", NTKHGM_ASIR="/nonexistent")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["schema"] == "ntkhgm.pfaffian/1" and obj["rank"] == 8 and obj["derivative"]


def test_check_on_shipped_relu(tmp_path):
    out = tmp_path / "relu.json"
    r = run(["--activation", "relu", "--check", "-o", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["std_monomials"] == [[0, 0, 0], [0, 1, 0]]


@pytest.mark.parametrize("args, message", [
    (["--activation", "relu", "--force", "--backend", "asir"], "Asir"),
    (["--activation", "sigmoid"], "not holonomic"),
    (["--activation", "nosuch"], "unknown activation"),
    ([], "exactly one"),
    (["--activation", "relu", "--annihilator", "u*du-1"], "exactly one"),
    (["--annihilator", "u*du-1"], "--name"),
    (["--annihilator", "u*du-1", "--name", "../../x"], "invalid activation name"),
    (["--annihilator", "u*du-1", "--name", "a", "--derivative"], "--derivative-annihilator"),
    (["--annihilator", "u*du-1; quit;", "--name", "a"], "position 6"),
    (["--annihilator", "u*du-1", "--name", "a", "--sigma", "__import__('os')"], "unknown name"),
    (["--annihilator", "u*du-1", "--name", "a", "--sigma", "u^2*step(u)"], "does not annihilate"),
    (["--annihilator", "u*du-2", "--name", "ReSin"], "reserved"),
    (["--annihilator", "u*du-5", "--name", "relu5"], "reserved"),
    (["--activation", "relu", "--backend", "maple"], "Invalid value for '--backend'"),
    (["--activation", "relu", "--no-such-option"], "No such option"),
    (["--activation"], "requires an argument"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, args, message):
    r = run(args, tmp_path, NTKHGM_ASIR="/nonexistent")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1
    cache = tmp_path / "cache"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_corrupt_cache_entry_is_a_clear_error(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "mine.json").write_text('{"schema": "ntkhgm.pfaffian/1"}')
    r = run(["--activation", "mine"], tmp_path)
    assert r.returncode == 2 and "--force" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1


def test_catalog_never_reads_the_user_cache(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "relu.json").write_text('{"schema": "ntkhgm.pfaffian/1"}')  # a would-be shadow
    r = run(["--activation", "relu"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["annihilator"] == "u*du-1"
