"""JSON that never holds NaN or infinity.

``json.dumps`` writes ``NaN`` by default, which is not JSON: ``jq``, browsers and
most JSON libraries refuse the whole file. Every file and response ``ptuning``
writes goes through :func:`dumps` (or :func:`json_safe`): a non-finite number
becomes ``null``, the JSON for "no value".
"""

from __future__ import annotations

import json
import math
from typing import Any


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (at any depth) replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def all_finite(value: Any) -> bool:
    """True when no float at any depth of ``value`` is NaN or infinite."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return all(all_finite(item) for item in value)
    return True


def dumps(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`json_safe` (``allow_nan=False`` guards against anything missed)."""
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
