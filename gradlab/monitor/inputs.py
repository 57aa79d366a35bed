"""What the Observer accepts from a user's loop: step numbers, names and arrays, each checked with a
one-line error that names the value and what is allowed."""

from __future__ import annotations

import numpy as np

Array = np.ndarray

INT64_MAX = 2**63 - 1


def checked_step(step: object) -> int:
    """A step number as stored (int64, counted from 0); anything else is refused."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step <= INT64_MAX:
        raise ValueError(f"step={step!r} must be an integer from 0 to 2**63 - 1 (the updates applied so far)")
    return int(step)


def shape_of(a: Array | None) -> tuple[int, ...] | None:
    """The array's shape, or None."""
    return None if a is None else a.shape


def is_text(s: object) -> bool:
    """A string that Parquet can store (no lone surrogates)."""
    if not isinstance(s, str):
        return False
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def measurable(role: str, layer: str, a: object) -> Array | None:
    """``a`` as a float64 array (float16 sums overflow past 65504, int8 ones wrap around), or a clear
    error for what has no real magnitude to measure (complex, text, objects) or no entries."""
    if a is None:
        return None
    if not isinstance(a, np.ndarray):
        try:
            a = np.asarray(a)
        except Exception as exc:  # whatever the object's __array__ raises
            raise TypeError(f"{role} of layer {layer!r} is not an array ({type(a).__name__}: {exc})") \
                from None
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{role} of layer {layer!r} has dtype {a.dtype}; the Observer measures real numbers "
                        "(floats, integers, bool): pass e.g. abs(x) or x.real")
    if a.size == 0:
        raise ValueError(f"{role} of layer {layer!r} is empty (shape {a.shape}); pass arrays with entries")
    return a if a.dtype == np.float64 else a.astype(np.float64)
