"""Number arrays in plan documents, packed: the base64 of their little-endian float64 bytes,
with their shape (pure: numpy, no I/O).

A 9-class plan's "none of these" rule (`combine.none_ridge`) holds about 3,000 numbers: written
as JSON numbers they were 78 of the plan document's 133 KB, and a repeated request read and
wrote them again (the stored plan parsed, then sent as `combination_json`). Packed, they are a
third smaller and one string to parse. float64, so a packed array reads back bit for bit: the
scores are exactly those of the fitted rule.

`unpack` also reads arrays written as nested JSON numbers (plans stored before).
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

KEY = "float64"  # the packed form: {"float64": base64, "shape": [...]}
MAX_VALUES = 4_000_000  # a packed array beyond this is refused (hostile JSON)


def pack(values: np.ndarray) -> dict[str, Any]:
    """`values` as {"float64": base64 of its little-endian float64 bytes, "shape": [...]}."""
    a = np.ascontiguousarray(values, dtype="<f8")
    return {KEY: base64.b64encode(a.tobytes()).decode("ascii"), "shape": list(a.shape)}


def unpack(value: Any) -> np.ndarray:
    """A float64 array from `pack`'s form or from nested JSON numbers. Raises ValueError or
    TypeError saying what is malformed (callers name the field)."""
    if not isinstance(value, Mapping):
        return np.asarray(value, dtype=np.float64)
    text, shape = value.get(KEY), value.get("shape")
    if not isinstance(text, str) or not isinstance(shape, list):
        raise ValueError(f'a packed array is {{"{KEY}": base64 text, "shape": [sizes]}}')
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 0 for n in shape):
        raise ValueError(f"a packed array's shape must be sizes >= 0, got {shape}")
    count = math.prod(shape)
    if count > MAX_VALUES:
        raise ValueError(f"a packed array holds at most {MAX_VALUES} numbers, not {count}")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise ValueError(f"a packed array's {KEY} is not base64 ({e})") from e
    if len(raw) != 8 * count:
        raise ValueError(f"a packed array of shape {shape} needs {8 * count} bytes, not {len(raw)}")
    return np.frombuffer(raw, dtype="<f8").astype(np.float64).reshape(shape)
