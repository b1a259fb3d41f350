"""The strict CSV reader and the writers (ntkhgm.io)."""

from __future__ import annotations

import numpy as np
import pytest

from ntkhgm.errors import CSVInputError, InputError
from ntkhgm.io import (
    MAX_ABS,
    check_compatible,
    format_csv,
    load_table,
    read_csv,
    write_array,
)


def _write(tmp_path, text, name="in.csv"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_header_and_target_by_name(tmp_path):
    p = _write(tmp_path, "a,b,y\n1,2,3\n4,5,6\n")
    X, y, header = read_csv(p, target="y")
    assert header == ["a", "b", "y"]
    np.testing.assert_array_equal(X, [[1, 2], [4, 5]])
    np.testing.assert_array_equal(y, [3, 6])
    assert X.dtype == np.float64


def test_no_header_target_by_index(tmp_path):
    p = _write(tmp_path, "1,2,3\n4,5,6\n")
    X, y, header = read_csv(p, target=0)
    assert header is None
    np.testing.assert_array_equal(X, [[2, 3], [5, 6]])
    np.testing.assert_array_equal(y, [1, 4])
    X, y, _ = read_csv(p, target="-1")
    np.testing.assert_array_equal(y, [3, 6])
    np.testing.assert_array_equal(X, [[1, 2], [4, 5]])


def test_integer_target_with_header(tmp_path):
    p = _write(tmp_path, "a,b,y\n1,2,3\n")
    X, y, _ = read_csv(p, target="1")
    np.testing.assert_array_equal(y, [2])
    np.testing.assert_array_equal(X, [[1, 3]])


def test_no_target(tmp_path):
    X, y, _ = read_csv(_write(tmp_path, "1,2\n3,4\n"))
    assert y is None and X.shape == (2, 2)


def test_valid_edge_cases(tmp_path):
    # single row, duplicate rows, all-zero rows, blank lines, BOM, CRLF, spaces, quotes
    X, _, _ = read_csv(_write(tmp_path, "5,6\n"))
    assert X.shape == (1, 2)
    X, _, _ = read_csv(_write(tmp_path, "0,0\n0,0\n1,2\n1,2\n"))
    assert X.shape == (4, 2)
    X, _, h = read_csv(_write(tmp_path, "\ufeffa,b\r\n\r\n 1 , 2e-3\r\n\"3\",4\r\n\n"))
    assert h == ["a", "b"]
    np.testing.assert_array_equal(X, [[1, 2e-3], [3, 4]])
    X, _, _ = read_csv(_write(tmp_path, f"{MAX_ABS!r},-1e-300\n"))
    assert X[0, 0] == MAX_ABS


def _err(tmp_path, text, **kw):
    p = _write(tmp_path, text)
    with pytest.raises(CSVInputError) as info:
        read_csv(p, **kw)
    msg = str(info.value)
    assert "\n" not in msg
    return p, info.value, msg


@pytest.mark.parametrize("text, line, column, words", [
    ("", 1, 1, "empty file"),
    ("\n\n", 1, 1, "empty file"),
    ("a,b,c\n", 2, 1, "header only"),
    ("1,2,3\n4,5\n", 2, 3, "ragged row"),
    ("1,2\n4,5,6\n", 2, 3, "ragged row"),
    ("a,b\n1,2\n3,x7\n", 3, 2, "'x7'"),
    ("a,b\n1,2\n3,\n", 3, 2, "empty cell"),
    ("a,b\n1,1_000\n", 2, 2, "non-numeric"),
    ("1,nan\n", 1, 2, "not finite"),
    ("1,2\n-inf,2\n", 2, 1, "not finite"),
    ("a,b\n1,2\n1e151,3\n", 3, 1, "too large"),
    ("a,b\n1,1e308\n", 2, 2, "too large"),
    ('a,b\n1,"2\n', 2, None, "malformed"),
])
def test_errors_name_file_line_column(tmp_path, text, line, column, words):
    p, exc, msg = _err(tmp_path, text)
    assert exc.line == line and exc.column == column
    loc = f"{p}:{line}" + (f":{column}" if column is not None else "")
    assert msg.startswith(loc + ":"), msg
    assert words in msg


def test_error_names_header_column(tmp_path):
    _, _, msg = _err(tmp_path, "age,bmi\n1,abc\n")
    assert "'bmi'" in msg and "'abc'" in msg and ":2:2:" in msg


@pytest.mark.parametrize("target", ["nope", "3", "-4", 7])
def test_unknown_target(tmp_path, target):
    _, exc, msg = _err(tmp_path, "a,b,c\n1,2,3\n", target=target)
    assert "unknown target" in msg and exc.line == 1


def test_target_only_column(tmp_path):
    _, _, msg = _err(tmp_path, "y\n1\n2\n", target="y")
    assert "no features" in msg


def test_target_values_checked(tmp_path):
    _, exc, msg = _err(tmp_path, "a,y\n1,2\n3,inf\n", target="y")
    assert (exc.line, exc.column) == (3, 2) and "'y'" in msg


def test_missing_file_and_binary(tmp_path):
    with pytest.raises(CSVInputError, match="no such file"):
        read_csv(tmp_path / "missing.csv")
    p = tmp_path / "bin.csv"
    p.write_bytes(b"1,2\n\xff\xfe,3\n")
    with pytest.raises(CSVInputError, match=r":2: not a UTF-8"):
        read_csv(p)
    p.write_bytes(b"1,2\n3,\x004\n")
    with pytest.raises(CSVInputError, match="NUL"):
        read_csv(p)
    with pytest.raises(CSVInputError, match="directory"):
        read_csv(tmp_path)


def test_check_compatible(tmp_path):
    train = load_table(_write(tmp_path, "a,b,y\n1,2,3\n", "tr.csv"), target="y")
    ok = load_table(_write(tmp_path, "a,b,y\n1,2,3\n", "ok.csv"), target="y")
    check_compatible(train, ok)
    bad = load_table(_write(tmp_path, "a,b,c,y\n1,2,3,4\n", "te.csv"), target="y")
    with pytest.raises(CSVInputError, match=r"te\.csv:2:3: 3 feature columns.*has 2"):
        check_compatible(train, bad)
    renamed = load_table(_write(tmp_path, "a,z,y\n1,2,3\n", "rn.csv"), target="y")
    with pytest.raises(CSVInputError, match=r"rn\.csv:1:2: feature column 'z'"):
        check_compatible(train, renamed)
    noheader = load_table(_write(tmp_path, "1,2,3\n", "nh.csv"), target=-1)
    check_compatible(train, noheader)


def test_csv_roundtrip_full_precision(tmp_path):
    rng = np.random.default_rng(0)
    A = rng.standard_normal((5, 3)) * 10.0 ** rng.integers(-300, 140, (5, 3))
    A[0, 0] = 0.1 + 0.2
    p = write_array(tmp_path / "a.csv", A, header=["x", "y", "z"])
    B, _, h = read_csv(p)
    assert h == ["x", "y", "z"]
    np.testing.assert_array_equal(A, B)
    text = format_csv(np.array([1.0, 2.5]))
    assert text == "1.0\n2.5\n"


def test_npy_and_stdout(tmp_path, capsys):
    A = np.arange(6.0).reshape(2, 3) / 7
    p = write_array(tmp_path / "a.npy", A)
    np.testing.assert_array_equal(np.load(p), A)
    assert write_array(None, A) is None
    out = capsys.readouterr().out
    np.testing.assert_array_equal(np.loadtxt(out.splitlines(), delimiter=","), A)


def test_bad_output_paths(tmp_path):
    with pytest.raises(InputError, match="unsupported output format"):
        write_array(tmp_path / "a.json", np.zeros(2))
    with pytest.raises(InputError, match="does not exist"):
        write_array(tmp_path / "no" / "a.csv", np.zeros(2))
    assert list(tmp_path.iterdir()) == []


def test_load_test_table(tmp_path):
    from ntkhgm.io import load_test_table

    train = load_table(_write(tmp_path, "a,b,y\n1,2,3\n", "tr.csv"), target="y")
    full = load_test_table(_write(tmp_path, "a,b,y\n4,5,6\n", "te.csv"), train, "y")
    np.testing.assert_array_equal(full.y, [6])
    bare = load_test_table(_write(tmp_path, "a,b\n4,5\n", "te2.csv"), train, "y")
    assert bare.y is None and bare.X.shape == (1, 2)
    bare = load_test_table(_write(tmp_path, "4,5\n", "te3.csv"), train, "y")
    assert bare.y is None
    with pytest.raises(CSVInputError, match=r"te4\.csv:2:2: 1 feature columns"):
        load_test_table(_write(tmp_path, "a,y\n4,5\n", "te4.csv"), train, "y")
