"""`ntkhgm kernel` out of core: -o K.npy / K.zarr tile by tile, --resume, sizes (issue 10)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import relu_ntk_reference

import ntkhgm
import ntkhgm.kernels as kernels_mod
from ntkhgm.cli import main

rng = np.random.default_rng(3)
X = rng.standard_normal((11, 3))


@pytest.fixture
def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click 8.1
    except TypeError:
        return CliRunner()  # click >= 8.2 keeps stderr apart


@pytest.fixture
def train(tmp_path):
    path = tmp_path / "train.csv"
    np.savetxt(path, X, delimiter=",", header="a,b,c", comments="")
    return str(path)


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name
                  or ".progress" in p.name or p.name.endswith(".tmp"))


@pytest.mark.parametrize("edge", ["3", "5", "20"])
def test_npy_written_tile_by_tile_equals_reference(runner, train, tmp_path, edge):
    out = tmp_path / "K.npy"
    r = runner.invoke(main, ["kernel", train, "-a", "relu", "-L", "3", "-o", str(out),
                             "--tile", edge, "-q"])
    assert r.exit_code == 0, r.output + r.stderr
    K = np.load(out)
    assert np.max(np.abs(K - relu_ntk_reference(X, X, 3))) <= 1e-13 * np.max(K)
    assert np.max(np.abs(K - ntkhgm.kernel(X, activation="relu", depth=3))) <= 1e-15 * K.max()
    assert leftovers(tmp_path) == []


def test_zarr_one_chunk_per_tile_and_several_depths(runner, train, tmp_path):
    import zarr

    out = tmp_path / "K.zarr"
    r = runner.invoke(main, ["kernel", train, "-a", "erf", "-L", "2", "-o", str(out),
                             "--tile", "4", "-q"])
    assert r.exit_code == 0, r.output + r.stderr
    arr = zarr.open_array(str(out), mode="r")
    assert arr.chunks == (4, 4) and arr.shape == (11, 11)
    ref = ntkhgm.kernel(X, activation="erf", depth=2)
    assert np.max(np.abs(arr[:] - ref)) <= 1e-15 * np.max(np.abs(ref))
    # every depth in one pass, as a group; rewriting an existing store replaces it
    r = runner.invoke(main, ["kernel", train, "-a", "erf", "-L", "1,2", "-o", str(out),
                             "--tile", "4", "-q"])
    assert r.exit_code == 0, r.output + r.stderr
    g = zarr.open_group(str(out), mode="r")
    for d in (1, 2):
        ref = ntkhgm.kernel(X, activation="erf", depth=d)
        assert np.max(np.abs(g[f"depth_{d}"][:] - ref)) <= 1e-15 * np.max(np.abs(ref))
    assert leftovers(tmp_path) == []


def test_npz_several_depths_and_outputs_that_cannot_hold_them(runner, train, tmp_path):
    out = tmp_path / "K.npz"
    r = runner.invoke(main, ["kernel", train, "-a", "relu", "-L", "1,2,3", "-o", str(out),
                             "-q"])
    assert r.exit_code == 0, r.output + r.stderr
    with np.load(out) as z:
        assert sorted(z.files) == ["depth_1", "depth_2", "depth_3"]
        for d in (1, 2, 3):
            assert np.max(np.abs(z[f"depth_{d}"] - relu_ntk_reference(X, X, d))) <= \
                1e-13 * np.max(z[f"depth_{d}"])
    for target in ("K.npy", "K.csv", None):
        args = ["kernel", train, "-a", "relu", "-L", "1,2"]
        if target:
            args += ["-o", str(tmp_path / target)]
        r = runner.invoke(main, args)
        assert r.exit_code == 2
        assert r.stderr.startswith("ntkhgm: error:") and "K.npz or -o K.zarr" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    r = runner.invoke(main, ["kernel", train, "-a", "relu", "-L", "1,x"])
    assert r.exit_code == 2


@pytest.mark.parametrize("args, env, message", [
    (["--memory", "lots"], {}, "--memory: expected a size"),
    (["--memory", "10"], {}, "out of range"),
    ([], {"NTKHGM_MEMORY": "abc"}, "NTKHGM_MEMORY"),
    (["--resume"], {}, "--resume needs"),
    (["--memory", "1MiB"], {}, "too small"),
])
def test_bad_scale_options_are_one_line_errors(runner, train, tmp_path, monkeypatch, args, env,
                                               message):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    r = runner.invoke(main, ["kernel", train, "-a", "relu", "-L", "2", *args])
    assert r.exit_code == 2
    assert r.stderr.startswith("ntkhgm: error:") and message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_too_large_for_the_output_fails_before_any_work(runner, train, tmp_path, monkeypatch):
    import ntkhgm.store as store

    def no_work(*a, **k):
        raise AssertionError("work started")

    monkeypatch.setattr(kernels_mod, "run_tiles", no_work)
    monkeypatch.setattr(kernels_mod, "row_values", no_work)
    monkeypatch.setattr(store, "available_memory", lambda: 1000)
    r = runner.invoke(main, ["kernel", train, "-a", "relu", "-L", "2"])
    assert r.exit_code == 2, r.stderr
    assert "the 11×11 kernel needs" in r.stderr and "of memory" in r.stderr
    assert "-o K.npy" in r.stderr and len(r.stderr.strip().splitlines()) == 1

    class Usage:
        free = 500

    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: Usage)
    r = runner.invoke(main, ["kernel", train, "-a", "relu", "-L", "2", "-o",
                             str(tmp_path / "K.npy")])
    assert r.exit_code == 2, r.stderr
    assert "needs 968 B on disk" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert leftovers(tmp_path) == [] and not (tmp_path / "K.npy").exists()


@pytest.mark.parametrize("name", ["K.npy", "K.zarr"])
def test_interrupted_run_resumes_to_the_same_kernel(runner, train, tmp_path, monkeypatch, name):
    out = tmp_path / name
    args = ["kernel", train, "-a", "gelu", "-L", "2", "-o", str(out), "--tile", "3", "-q"]
    ref = ntkhgm.kernel(X, activation="gelu", depth=2)
    import ntkhgm.store as store

    real_write = store.TiledOutput.write
    calls = {"n": 0}

    def interrupted(self, tile, result):
        if calls["n"] == 5:  # of 10 tiles
            raise KeyboardInterrupt
        calls["n"] += 1
        real_write(self, tile, result)

    monkeypatch.setattr(store.TiledOutput, "write", interrupted)
    r = runner.invoke(main, args)
    assert r.exit_code == 130 and "rerun with --resume" in r.stderr
    assert not out.exists() and (tmp_path / f"{name}.partial").exists()
    monkeypatch.setattr(store.TiledOutput, "write", real_write)
    # a tile whose data was being written when the process died has no marker line
    with open(tmp_path / f"{name}.progress", "a") as fh:
        fh.write('{"tile": [3, 3]')
    if name.endswith(".npy"):  # ... and its block holds whatever was half written
        part = np.load(tmp_path / f"{name}.partial", mmap_mode="r+")
        part[9:, 9:] = np.nan
        part.flush()
        del part
    computed = []
    real_tile = kernels_mod.compute_tile

    def counting(rec, A, B):
        computed.append(1)
        return real_tile(rec, A, B)

    monkeypatch.setattr(kernels_mod, "compute_tile", counting)
    r = runner.invoke(main, args + ["--resume"])
    assert r.exit_code == 0, r.stderr
    assert len(computed) == 5
    if name.endswith(".npy"):
        K = np.load(out)
    else:
        import zarr

        K = zarr.open_array(str(out), mode="r")[:]
    assert np.max(np.abs(K - ref)) <= 1e-15 * np.max(np.abs(ref))
    assert leftovers(tmp_path) == []


def test_resume_refuses_another_command(runner, train, tmp_path, monkeypatch):
    out = tmp_path / "K.zarr"
    import ntkhgm.store as store

    def stop(self, tile, result):
        raise KeyboardInterrupt

    monkeypatch.setattr(store.TiledOutput, "write", stop)
    r = runner.invoke(main, ["kernel", train, "-a", "relu", "-L", "2", "-o", str(out),
                             "--tile", "4"])
    assert r.exit_code == 130
    header = json.loads((tmp_path / "K.zarr.progress").read_text().splitlines()[0])
    assert header["edge"] == 4
    r = runner.invoke(main, ["kernel", train, "-a", "relu", "-L", "3", "-o", str(out),
                             "--resume"])
    assert r.exit_code == 2 and "different command" in r.stderr


def test_error_during_tiles_leaves_nothing(runner, tmp_path):
    # W² = 1e200 times a layer-1 value of ~1e200 overflows at layer 1
    bad = tmp_path / "big.csv"
    bad.write_text("a,b\n1,2\n3,1\n3,4\n")
    out = tmp_path / "K.npy"
    r = runner.invoke(main, ["kernel", str(bad), "-a", "relu", "-L", "2", "--convention", "nt",
                             "--W-std", "1e100", "-o", str(out)])
    assert r.exit_code == 2 and "at layer 1" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert leftovers(tmp_path) == [] and not out.exists()


def test_sigkill_at_half_and_resume(tmp_path, subprocess_env):
    """A real kill: SIGKILL once about half the tiles are recorded, then --resume."""
    Z = np.random.default_rng(5).standard_normal((40, 3))
    train = tmp_path / "t.csv"
    np.savetxt(train, Z, delimiter=",")
    out = tmp_path / "K.npy"
    args = [sys.executable, "-m", "ntkhgm", "kernel", str(train), "-a", "gelu", "-L", "3",
            "-o", str(out), "--tile", "4", "-q"]
    n_tiles = 10 * 11 // 2
    p = subprocess.Popen(args, env=subprocess_env, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    progress = tmp_path / "K.npy.progress"
    deadline = time.monotonic() + 120
    done = 0
    while p.poll() is None and time.monotonic() < deadline:
        if progress.exists():
            done = progress.read_text().count("\n") - 1
            if done >= n_tiles // 2:
                os.kill(p.pid, signal.SIGKILL)
                break
        time.sleep(0.01)
    p.wait(timeout=60)
    assert p.returncode == -signal.SIGKILL, "finished before it could be killed"
    assert not out.exists() and (tmp_path / "K.npy.partial").exists()
    r = subprocess.run(args + ["--resume"], env=subprocess_env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    ref = ntkhgm.kernel(Z, activation="gelu", depth=3)
    assert np.max(np.abs(np.load(out) - ref)) <= 1e-15 * np.max(np.abs(ref))
    assert leftovers(tmp_path) == []
