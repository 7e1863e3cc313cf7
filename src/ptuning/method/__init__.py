"""Tuning methods as registered plug-ins: one module per method, one interface (``base.py``).

Importing this package registers the built-in methods; :func:`method_config` and
:func:`build_method` are how the rest of the library names them.
"""

from . import apt, finetune, linear_probe, lpt, prefix, prompt_tuning, ptv1  # noqa: F401  (register the built-ins)
from .base import (
    REGISTRY,
    Method,
    MethodConfig,
    PoolBatching,
    config_from_dict,
    decay_groups,
    method_class,
    method_config,
    register,
)


def build_method(config: MethodConfig, encoder) -> Method:
    """The method ``config`` names, attached to ``encoder``."""
    method = method_class(config.method)(config, encoder)
    method.attach(encoder)
    return method


def method_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


__all__ = [
    "REGISTRY",
    "Method",
    "MethodConfig",
    "PoolBatching",
    "build_method",
    "config_from_dict",
    "decay_groups",
    "method_class",
    "method_config",
    "method_names",
    "register",
]
