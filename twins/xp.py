"""Pick the array module (NumPy or CuPy) from the arrays themselves."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy


def array_module(*arrays: Any) -> ModuleType:
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``.

    Model code calls this instead of branching on a GPU flag, so one code path
    runs on both.
    """
    for a in arrays:
        if type(a).__module__.split(".", 1)[0] == "cupy":
            import cupy  # imported only when a CuPy array is already in hand

            return cupy
    return numpy


def to_numpy(a: Any) -> numpy.ndarray:
    """Bring an array back to host memory (no copy for NumPy arrays)."""
    return a.get() if hasattr(a, "get") and not isinstance(a, numpy.ndarray) else numpy.asarray(a)


def named_module(name: str) -> ModuleType:
    """The array module a twin is configured with: ``numpy``, ``cupy``, or ``auto`` (CuPy where a GPU is).

    ``cupy`` without CuPy or without a usable CUDA device is an error naming
    what is missing; ``auto`` then falls back to NumPy.
    """
    if name == "numpy":
        return numpy
    if name not in ("cupy", "auto"):
        raise ValueError(f"array module must be 'numpy', 'cupy' or 'auto', got {name!r}")
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            raise RuntimeError("no CUDA device")
        return cupy
    except Exception as err:  # ImportError, CUDA driver errors: either way no GPU here
        if name == "auto":
            return numpy
        from twinloop.errors import TwinError

        raise TwinError(f"array: cupy needs CuPy (pip install 'twinloop[gpu]') and a CUDA GPU on the node "
                        f"the twin runs on: {type(err).__name__}: {err}") from None
