"""Property-based tests (hypothesis, bounded) for the CSV reader."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ntkhgm.errors import CSVInputError
from ntkhgm.io import MAX_ABS, format_csv, read_csv

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

finite = st.floats(min_value=-MAX_ABS, max_value=MAX_ABS, allow_nan=False,
                   allow_infinity=False)
matrices = st.integers(1, 6).flatmap(
    lambda n: st.integers(1, 5).flatmap(lambda d: arrays(np.float64, (n, d), elements=finite)))


@SETTINGS
@given(A=matrices, with_header=st.booleans())
def test_roundtrip(tmp_path, A, with_header):
    header = [f"c{j}" for j in range(A.shape[1])] if with_header else None
    p = tmp_path / "r.csv"
    p.write_text(format_csv(A, header))
    X, y, h = read_csv(p)
    assert y is None and h == header
    np.testing.assert_array_equal(X, A + 0.0)  # -0.0 == 0.0


@SETTINGS
@given(A=matrices, data=st.data())
def test_target_split(tmp_path, A, data):
    j = data.draw(st.integers(-A.shape[1], A.shape[1] - 1))
    p = tmp_path / "t.csv"
    p.write_text(format_csv(A))
    if A.shape[1] == 1:
        return
    X, y, _ = read_csv(p, target=j)
    np.testing.assert_array_equal(y, A[:, j])
    np.testing.assert_array_equal(X, np.delete(A, j % A.shape[1], axis=1))


@SETTINGS
@given(A=matrices, data=st.data(),
       bad=st.sampled_from(["nan", "inf", "-Infinity", "abc", "1e999", "2e150", "1..2", "",
                            "0x10", "--1", "1,5e3x"]))
def test_bad_cell_located(tmp_path, A, data, bad):
    n, d = A.shape
    assume(not (d == 1 and bad == ""))  # a one-column empty line is a blank line
    i = data.draw(st.integers(0, n - 1))
    j = data.draw(st.integers(0, d - 1))
    cells = [[repr(float(v)) for v in row] for row in A]
    cells[i][j] = f'"{bad}"'
    header = ",".join(f"c{k}" for k in range(d))
    text = header + "\n" + "\n".join(",".join(r) for r in cells) + "\n"
    p = tmp_path / "b.csv"
    p.write_text(text)
    try:
        read_csv(p)
    except CSVInputError as exc:
        assert (exc.line, exc.column) == (i + 2, j + 1)
        assert str(exc).startswith(f"{p}:{i + 2}:{j + 1}: ")
        assert "\n" not in str(exc)
    else:
        raise AssertionError(f"{bad!r} accepted")


@SETTINGS
@given(text=st.text(alphabet=st.sampled_from(list("0123456789.,-+eE\n\r \"'naifx_\t;")),
                    max_size=80))
def test_arbitrary_text_never_crashes(tmp_path, text):
    p = tmp_path / "f.csv"
    p.write_bytes(text.encode())
    try:
        X, _, _ = read_csv(p)
    except CSVInputError as exc:
        assert str(exc).startswith(str(p)) and "\n" not in str(exc)
    else:
        assert X.ndim == 2 and X.shape[0] >= 1 and np.isfinite(X).all()
        assert np.abs(X).max(initial=0.0) <= MAX_ABS
