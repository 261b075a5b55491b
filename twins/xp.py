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
