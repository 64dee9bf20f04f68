"""A restricted unpickler for the original StackGAN metadata pickles.

``filenames.pickle``, ``class_info.pickle`` and ``char-CNN-RNN-embeddings.pickle`` were written by
Python 2 (cPickle, protocol 2). A plain ``pickle.load`` would run whatever code a tampered file asks
for, so ``load_pickle`` only lets through built-in containers and scalars, numpy arrays, dtypes and
scalars, and ``_codecs.encode`` (how protocol-2 pickles spell raw bytes); Python-2 ``str`` objects
are decoded as latin1, as numpy's own documentation recommends. Anything else raises ``DataError``
naming the file and the refused global.
"""

from __future__ import annotations

import codecs
import collections
import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from stackgan2.errors import DataError


def _numpy_multiarray() -> Any:
    # numpy 2 moved numpy.core to numpy._core; pickles from either name the function they were made with.
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1.x
        return importlib.import_module("numpy.core.multiarray")


_MULTIARRAY = _numpy_multiarray()
_ALLOWED: dict[tuple[str, str], Any] = {
    **{(module, "_reconstruct"): _MULTIARRAY._reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _MULTIARRAY.scalar for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{
        (module, cls.__name__): cls  # protocol-2 pickles name the builtins module as Python 2 did
        for module in ("builtins", "__builtin__")
        for cls in (set, frozenset, bytearray, complex, list, dict, tuple)
    },
}


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified_name = f"{module}.{name}"


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _RefusedGlobal(module, name) from None


def load_pickle(path: Path) -> Any:
    """Load a (possibly Python-2) pickle that may hold only containers, strings, numbers and numpy arrays."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file {path}")
    try:
        with open(path, "rb") as handle:
            return _RestrictedUnpickler(handle, encoding="latin1").load()
    except _RefusedGlobal as exc:
        raise DataError(
            f"refusing to load {path}: it asks for {exc.qualified_name}, but only plain containers "
            "and numpy arrays are allowed in dataset pickles"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, OverflowError) as exc:
        raise DataError(f"cannot read pickle {path}: {type(exc).__name__}: {exc}") from None
