"""Tiles on Dask: a LocalCluster of two processes, and the README's `dask scheduler` /
`dask worker ADDRESS` commands as subprocesses on 127.0.0.1 (issue 10 item 3)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

import ntkhgm
from ntkhgm.cli import main

distributed = pytest.importorskip("distributed")

rng = np.random.default_rng(11)
X = rng.standard_normal((13, 3))
XT = rng.standard_normal((5, 3))


def rel(A, B) -> float:
    return float(np.max(np.abs(A - B)) / np.max(np.abs(B)))


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", host="127.0.0.1")
    c = distributed.Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.mark.parametrize("act", ["relu", "resin"])
def test_local_cluster_equals_local_run(client, act):
    for Y in (None, XT):
        A = X if Y is None else Y
        B = None if Y is None else X
        local = ntkhgm.kernel(A, B, activation=act, depth=[1, 3])
        remote = ntkhgm.kernel(A, B, activation=act, depth=[1, 3], client=client, tile=4)
        for d in (1, 3):
            assert rel(remote[d], local[d]) <= 1e-15


def test_dask_array(client):
    from ntkhgm.parallel import dask_kernel

    arr = dask_kernel(X, activation="erf", depth=2, tile=4)
    assert arr.chunks == ((4, 4, 4, 1), (4, 4, 4, 1))
    K = client.compute(arr).result()
    assert rel(K, ntkhgm.kernel(X, activation="erf", depth=2)) <= 1e-15


def test_worker_error_is_the_typed_error(client):
    from ntkhgm.errors import NonFiniteKernelError

    Z3 = np.array([[1.0, 2.0], [3.0, 1.0], [3.0, 4.0]])   # W² = 1e200: inf at layer 1
    with pytest.raises(NonFiniteKernelError, match="layer 1"):
        ntkhgm.kernel(Z3, activation="relu", depth=2, convention="nt", W_std=1e100,
                      client=client, tile=1)


def test_cli_jobs_two(tmp_path):
    train = tmp_path / "t.csv"
    np.savetxt(train, X, delimiter=",")
    out = tmp_path / "K.npy"
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    r = runner.invoke(main, ["kernel", str(train), "-a", "erf", "-L", "2", "-o", str(out),
                             "--jobs", "2", "--tile", "5", "-q"])
    assert r.exit_code == 0, r.stderr
    assert rel(np.load(out), ntkhgm.kernel(X, activation="erf", depth=2)) <= 1e-15
    r = runner.invoke(main, ["kernel", str(train), "-a", "relu", "-L", "2", "--jobs", "2",
                             "--scheduler", "tcp://127.0.0.1:1"])
    assert r.exit_code == 2 and "exclude each other" in r.stderr


def test_readme_scheduler_and_worker_commands(tmp_path, subprocess_env):
    """`dask scheduler` and `dask worker ADDRESS` as the README shows them, on 127.0.0.1."""
    sched_file = tmp_path / "scheduler.json"
    env = dict(subprocess_env)
    procs = []
    try:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(sched_file)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while not sched_file.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.2)
        address = json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", "worker", address, "--nthreads", "1",
             "--no-dashboard", "--host", "127.0.0.1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with distributed.Client(address, timeout="30s") as c:
            c.wait_for_workers(1, timeout=60)
        train = tmp_path / "t.csv"
        np.savetxt(train, X, delimiter=",")
        out = tmp_path / "K.npy"
        r = subprocess.run([sys.executable, "-m", "ntkhgm", "kernel", str(train), "-a", "erf",
                            "-L", "3", "-o", str(out), "--tile", "5", "-q", "--scheduler",
                            address], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert rel(np.load(out), ntkhgm.kernel(X, activation="erf", depth=3)) <= 1e-15
        # the environment variable does the same
        env2 = dict(env, DASK_SCHEDULER_ADDRESS=address)
        r = subprocess.run([sys.executable, "-m", "ntkhgm", "kernel", str(train), "-a", "relu",
                            "-L", "1", "--tile", "5", "-q"], env=env2, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        K = np.loadtxt(r.stdout.splitlines(), delimiter=",")
        assert rel(K, ntkhgm.kernel(X, activation="relu", depth=1)) <= 1e-15
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in reversed(procs):
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def test_unreachable_scheduler_is_one_line(tmp_path):
    train = tmp_path / "t.csv"
    np.savetxt(train, X, delimiter=",")
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    r = runner.invoke(main, ["kernel", str(train), "-a", "relu", "-L", "1", "--scheduler",
                             "tcp://127.0.0.1:9"])
    assert r.exit_code == 2 and "cannot reach the Dask scheduler" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_user_activation_travels_with_the_task(tmp_path, monkeypatch):
    """A worker whose cache lacks the user activation's Pfaffians gets them with the task."""
    mine, theirs = tmp_path / "client-cache", tmp_path / "worker-cache"
    monkeypatch.setenv("NTKHGM_CACHE_DIR", str(mine))
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    common = ["--annihilator", "u*du-2", "--derivative-annihilator", "u*du-1",
              "--name", "myrelu2", "--sigma", "u^2*step(u)", "--dsigma", "2*u*step(u)",
              "--quiet"]
    for extra in ([], ["--derivative"]):
        r = runner.invoke(main, ["pfaffian", *common, *extra])
        assert r.exit_code == 0, r.output
    Z = X[:6]
    local = ntkhgm.kernel(Z, activation="myrelu2", depth=2, method="hgm")
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", host="127.0.0.1",
                                       env={"NTKHGM_CACHE_DIR": str(theirs)})
    try:
        with distributed.Client(cluster, set_as_default=False) as c:
            assert c.run(lambda: __import__("os").environ["NTKHGM_CACHE_DIR"]) \
                == {w: str(theirs) for w in c.scheduler_info()["workers"]}
            remote = ntkhgm.kernel(Z, activation="myrelu2", depth=2, method="hgm", client=c,
                                   tile=4)
    finally:
        cluster.close()
    assert rel(remote, local) <= 1e-15
    assert (theirs / "myrelu2.json").is_file() and (theirs / "myrelu2.derivative.json").is_file()


def test_conjugate_gradients_on_the_cluster(client, tmp_path):
    import zarr
    from scipy import linalg

    from ntkhgm.solvers import conjugate_gradient, open_kernel

    K = ntkhgm.kernel(X, activation="relu", depth=2)
    z = zarr.create_array(store=str(tmp_path / "K.zarr"), shape=K.shape, chunks=(5, 5),
                          dtype="f8")
    z[:] = K
    y = rng.standard_normal(len(X))
    a, _ = conjugate_gradient(open_kernel(tmp_path / "K.zarr"), y, 0.5, tol=1e-12,
                              client=client)
    ref = linalg.solve(K + 0.5 * np.eye(len(K)), y, assume_a="pos")
    assert np.max(np.abs(a - ref)) <= 1e-9 * np.max(np.abs(ref))


def test_regress_cg_with_jobs_two(tmp_path):
    """`regress --solver cg --jobs 2`: tiles and the products K·p on a local cluster."""
    from conftest import relu_ntk_reference

    from ntkhgm.regression import scale_inputs

    Z = rng.standard_normal((60, 3))
    y = Z[:, 0] - Z[:, 1] * Z[:, 2]
    train, test, out = tmp_path / "train.csv", tmp_path / "test.csv", tmp_path / "pred.csv"
    np.savetxt(train, np.c_[Z, y], delimiter=",")
    np.savetxt(test, np.c_[XT, XT[:, 0]], delimiter=",")
    try:
        runner = CliRunner(mix_stderr=False)
    except TypeError:
        runner = CliRunner()
    r = runner.invoke(main, ["regress", str(train), str(test), "--target", "-1", "-L", "2",
                             "--ridge", "0.2", "--solver", "cg", "--jobs", "2", "--tile", "16",
                             "-o", str(out)])
    assert r.exit_code == 0, r.stderr
    A, B = scale_inputs(Z, XT, "auto")
    K = relu_ntk_reference(A, A, 2)
    ref = relu_ntk_reference(B, A, 2) @ np.linalg.solve(K + 0.2 * np.eye(60), y - y.mean())
    got = np.loadtxt(out, delimiter=",", skiprows=1)
    assert rel(got, ref + y.mean()) <= 1e-7
