"""``ntkhgm bench paper`` and ``ntkhgm bench accuracy`` at --quick sizes (issue 5).

No timing assertions: only that the commands run, write parseable files, and that
the accuracy claims hold as measured in the run.
"""

from __future__ import annotations

import csv
import json
import math
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import DATA

from ntkhgm.cli import main
from ntkhgm.duals import METHODS


def runner() -> CliRunner:
    try:
        return CliRunner(mix_stderr=False)  # click 8.1
    except TypeError:
        return CliRunner()  # click >= 8.2 keeps stderr apart


def invoke(*args):
    result = runner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def read_rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def num(cell: str) -> float:
    return float(cell) if cell != "" else math.nan


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper")
    result = invoke("bench", "paper", "--quick", "-o", out)  # the shipped data by default
    return out, result


def test_paper_files_and_table(paper):
    out, result = paper
    rows = read_rows(out / "bench_paper.csv")
    data = json.loads((out / "bench_paper.json").read_text())
    methods = [r["method"] for r in rows]
    assert methods == ["closed", "gh-25", "gh-50", "hgm one-path-per-point",
                       "series+hgm all-at-once"]
    assert [r["method"] for r in data["rows"]] == methods
    for r in rows[1:]:
        for col in ("train_time_s", "inference_time_s", "kernel_max_rel_err",
                    "kernel_rel_fro_err", "pred_rel_diff_vs_reference"):
            assert math.isfinite(num(r[col])) and num(r[col]) >= 0, (r["method"], col)
    # the table on stdout names every method and the subsample note; files named on stderr
    for m in methods:
        assert m in result.stdout
    assert "subsample" in result.stdout and "bench_paper.json" in result.stderr
    assert data["activation"] == "resin" and data["config"]["quick"] is True
    assert data["data"]["n_train"] == 30 and data["data"]["n_test"] == 15


def test_paper_hgm_matches_quadrature(paper):
    out, _ = paper
    rows = {r["method"]: r for r in read_rows(out / "bench_paper.csv")}
    for m in ("series+hgm all-at-once", "hgm one-path-per-point"):
        assert num(rows[m]["kernel_max_rel_err"]) <= 1e-10, rows[m]
        assert num(rows[m]["kernel_rel_fro_err"]) <= 1e-10, rows[m]
    # one-path-per-point ran on a subsample: its full-size target error is NA,
    # all-at-once has a finite one
    assert rows["hgm one-path-per-point"]["timed_on"] == "subsample"
    assert rows["hgm one-path-per-point"]["pred_rel_rmse_vs_targets"] == ""
    assert math.isfinite(num(rows["series+hgm all-at-once"]["pred_rel_rmse_vs_targets"]))
    # the pointwise method is registered only during the run
    assert "hgm-pointwise" not in METHODS


def test_paper_user_errors(tmp_path):
    r = runner().invoke(main, ["bench", "paper", "--data", str(DATA / "diabetes_train.csv"),
                               str(DATA / "diabetes_test.csv"), "--target", "nope",
                               "--quick", "-o", str(tmp_path)])
    assert r.exit_code == 2 and r.stderr.startswith("ntkhgm: error: "), r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = runner().invoke(main, ["bench", "paper", "--quick", "--gh-degree", "0",
                               "--data", str(DATA / "diabetes_train.csv"),
                               str(DATA / "diabetes_test.csv"), "--target", "progression",
                               "-o", str(tmp_path)])
    assert r.exit_code == 2 and "degree" in r.stderr, r.stderr
    assert not list(tmp_path.iterdir())


def _check_accuracy_csv(path, with_closed: bool):
    rows = read_rows(path)
    methods = {r["method"] for r in rows}
    assert {"gh", "series+hgm"} <= methods and (("closed" in methods) == with_closed)
    gh = [r for r in rows if r["method"] == "gh" and r["note"] == ""]
    hgm = [r for r in rows if r["method"] == "series+hgm"]
    assert len(gh) >= 3 and len(hgm) >= 3
    for r in gh + hgm:
        assert num(r["time_s"]) > 0 and math.isfinite(num(r["max_rel_err"]))
    # the tightest hgm tolerance is accurate as measured against the reference
    tightest = min(hgm, key=lambda r: float(r["value"]))
    assert num(tightest["max_rel_err"]) <= 1e-10, tightest
    return rows


def test_accuracy_relu_csv_and_png(tmp_path):
    result = invoke("bench", "accuracy", "--activation", "relu", "--quick", "-o", tmp_path)
    rows = _check_accuracy_csv(tmp_path / "bench_accuracy_relu.csv", with_closed=True)
    assert {r["reference"] for r in rows} == {"closed"}
    assert "degree" in result.stdout and "tol" in result.stdout
    png = tmp_path / "bench_accuracy_relu.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    try:
        import matplotlib.image as mpimg
    except ImportError:
        pytest.skip("matplotlib is not installed (pip install 'ntkhgm[plot]'): "
                    "the PNG cannot be opened with matplotlib.image.imread")
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert np.ptp(img) > 0  # not a blank image


def test_accuracy_resin_quad_reference(tmp_path):
    invoke("bench", "accuracy", "-a", "resin", "--quick", "--points", "3", "-o", tmp_path)
    rows = _check_accuracy_csv(tmp_path / "bench_accuracy_resin.csv", with_closed=False)
    assert {r["reference"] for r in rows} == {"quad"}


def test_accuracy_without_matplotlib(tmp_path, monkeypatch):
    # an entry of None in sys.modules makes `import matplotlib` raise ImportError
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = invoke("bench", "accuracy", "-a", "relu", "--quick", "-o", tmp_path)
    assert 'pip install "ntkhgm[plot]"' in result.stderr
    assert (tmp_path / "bench_accuracy_relu.csv").exists()
    assert not (tmp_path / "bench_accuracy_relu.png").exists()


def test_paper_kernel_not_positive_definite(tmp_path):
    """A duplicated training row with ridge 0: the full-size fits fail, the run does not."""
    lines = (DATA / "diabetes_train.csv").read_text().splitlines()
    train = tmp_path / "dup_train.csv"
    train.write_text("\n".join(lines[:21] + [lines[1]]) + "\n")
    test = tmp_path / "test.csv"
    test.write_text("\n".join((DATA / "diabetes_test.csv").read_text().splitlines()[:8]) + "\n")
    out = tmp_path / "out"
    result = invoke("bench", "paper", "--quick", "--data", train, test, "--target",
                    "progression", "--ridge", "0", "--depth", "1", "--subsample", "3",
                    "--pointwise", "4", "-o", out)
    assert "not positive definite" in result.stdout
    rows = {r["method"]: r for r in read_rows(out / "bench_paper.csv")}
    for m in ("gh-25", "series+hgm all-at-once"):
        assert "not positive definite" in rows[m]["note"]
        assert rows[m]["pred_rel_rmse_vs_targets"] == ""
        assert math.isfinite(num(rows[m]["kernel_max_rel_err"]))


def test_paper_reports_r2_with_defaults_and_seed_setting(paper):
    """R² per method (seed's setting) and with the defaults (issue 15), recomputed here."""
    from ntkhgm.io import read_csv
    from ntkhgm.regression import KernelRegressor

    out, result = paper
    data = json.loads((out / "bench_paper.json").read_text())
    Xtr, ytr, _ = read_csv(DATA / "diabetes_train.csv", target="progression")
    Xte, yte, _ = read_csv(DATA / "diabetes_test.csv", target="progression")
    itr, ite = data["data"]["train_rows"], data["data"]["test_rows"]
    Xtr, ytr, Xte, yte = Xtr[itr], ytr[itr], Xte[ite], yte[ite]
    ss_tot = np.sum((yte - yte.mean()) ** 2)
    for r in read_rows(out / "bench_paper.csv"):
        if r["pred_rel_rmse_vs_targets"]:
            # R² from the relative RMSE column: SS_res = (rel·‖y‖)²
            ss_res = (num(r["pred_rel_rmse_vs_targets"]) * np.linalg.norm(yte)) ** 2
            assert num(r["r2_test"]) == pytest.approx(1 - ss_res / ss_tot, rel=1e-9, abs=1e-12)
    d = data["defaults"]
    model = KernelRegressor(activation="resin", depth=data["config"]["depth"]).fit(Xtr, ytr)
    pred = model.predict(Xte)
    assert d["r2_test"] == pytest.approx(1 - np.sum((pred - yte) ** 2) / ss_tot, rel=1e-9)
    assert d["ridge_chosen"] == pytest.approx(model.ridge_, rel=1e-12)
    seed = data["seed_setting"]
    assert seed["method"] == "series+hgm all-at-once" and seed["ridge"] == 1.0
    assert "R² on the test rows: defaults" in result.stdout and "seed's setting" in result.stdout
