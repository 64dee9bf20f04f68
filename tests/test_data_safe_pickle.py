"""The restricted unpickler: containers, numpy arrays and Python-2 strings only."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
from pathlib import Path

import numpy as np
import pytest

from stackgan2.data.safe_pickle import load_pickle
from stackgan2.errors import DataError


def test_plain_data_and_numpy_round_trip(tmp_path: Path) -> None:
    value = {"names": ["a", "b"], "ids": (1, 2.5, None), "set": {3}, "array": np.arange(6, dtype=np.float32).reshape(2, 3),
             "scalar": np.int64(7), "raw": b"\x00\xff"}
    path = tmp_path / "ok.pickle"
    path.write_bytes(pickle.dumps(value, protocol=2))
    loaded = load_pickle(path)
    assert loaded["names"] == ["a", "b"] and loaded["set"] == {3} and loaded["raw"] == b"\x00\xff"
    assert np.array_equal(loaded["array"], value["array"]) and loaded["array"].dtype == np.float32
    assert loaded["scalar"] == 7


def test_python2_numpy_array_pickle(tmp_path: Path) -> None:
    # numpy.core.multiarray._reconstruct with the array bytes as a Python-2 str, as cPickle wrote them.
    raw = np.array([1.5, -2.0], dtype="<f4").tobytes()
    data = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85U\x01b\x87Rq\x02"
            b"(K\x01K\x02\x85cnumpy\ndtype\nq\x03U\x02f4K\x00K\x01\x87Rq\x04(K\x03U\x01<NNNJ\xff\xff\xff\xff"
            b"J\xff\xff\xff\xffK\x00tb\x89U\x08" + raw + b"tb.")
    path = tmp_path / "py2.pickle"
    path.write_bytes(data)
    assert load_pickle(path).tolist() == [1.5, -2.0]


class _Call:
    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("payload", [_Call(os.system, "true"), _Call(builtins.eval, "1"),
                                     _Call(subprocess.Popen, ["true"]), [1, {"nested": _Call(getattr, (), "count")}]])
def test_code_execution_is_refused(tmp_path: Path, payload) -> None:
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DataError, match=r"refusing to load .*evil.pickle: it asks for \S+, but only plain containers"):
        load_pickle(path)


def test_truncated_and_missing_pickles(tmp_path: Path) -> None:
    path = tmp_path / "cut.pickle"
    path.write_bytes(pickle.dumps(list(range(100)), protocol=2)[:20])
    with pytest.raises(DataError, match=r"cannot read pickle .*cut.pickle"):
        load_pickle(path)
    with pytest.raises(DataError, match=r"missing file .*absent.pickle"):
        load_pickle(tmp_path / "absent.pickle")
