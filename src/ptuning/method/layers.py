"""``--prefix-layers``: which layers of the backbone get a deep prompt (``all``, ``top:K``, ``A-B``).

A prompt in the top layers only leaves the bottom ones exactly as the frozen backbone runs them: nothing is
back-propagated through them, their dropout is off while training, and their output for an input never changes,
so it can be computed once (``activations.py``). Every spec names one contiguous range of layers, which keeps a
prompt's layers a view of the serving pool's stack and the frozen part a prefix ``[0, lowest)`` of the backbone.

The syntax is checked when the method's config is made (one line naming the flag); the range against the
backbone's depth when the method is built on it.
"""

from __future__ import annotations

import re

from ..errors import PTuningError

ALL = "all"
_TOP = re.compile(r"top:(\d+)")
_RANGE = re.compile(r"(\d+)-(\d+)")
_FORMS = "all, top:K (the K highest layers) or A-B (layers A to B, counted from 0)"


def check_layer_spec(spec: str) -> None:
    """Refuse a spec that no backbone could satisfy (``top:0``, ``3-1``, ``bottom``), in one line."""
    if not isinstance(spec, str):
        raise PTuningError(f"--prefix-layers {spec!r}: give {_FORMS}")
    spec = spec.strip()
    if spec == ALL:
        return
    top, span = _TOP.fullmatch(spec), _RANGE.fullmatch(spec)
    if top and int(top[1]) == 0:
        raise PTuningError("--prefix-layers top:0 prompts no layer: give K >= 1 (or use --method linear-probe)")
    if span and int(span[1]) > int(span[2]):
        raise PTuningError(f"--prefix-layers {spec}: the first layer is above the last; give A-B with A <= B")
    if not top and not span:
        raise PTuningError(f"--prefix-layers {spec!r}: give {_FORMS}")


def resolve_layers(spec: str, num_layers: int) -> range:
    """The backbone layers ``spec`` names on a backbone of ``num_layers`` layers, or one line saying why not."""
    check_layer_spec(spec)
    spec = spec.strip()
    if spec == ALL:
        return range(num_layers)
    top = _TOP.fullmatch(spec)
    if top:
        count = int(top[1])
        if count > num_layers:
            raise PTuningError(f"--prefix-layers {spec}: this backbone has {num_layers} layers; give K <= {num_layers}")
        return range(num_layers - count, num_layers)
    first, last = (int(x) for x in _RANGE.fullmatch(spec).groups())
    if last >= num_layers:
        raise PTuningError(
            f"--prefix-layers {spec}: this backbone has layers 0-{num_layers - 1}; give a range inside it"
        )
    return range(first, last + 1)


def canonical(layers: range, num_layers: int) -> str:
    """How artifacts record the layers: ``all``, or ``A-B`` (``top:K`` depends on the backbone's depth)."""
    return ALL if layers == range(num_layers) else f"{layers.start}-{layers.stop - 1}"
