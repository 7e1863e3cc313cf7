"""Linear probe (``--method linear-probe``): only the task head trains, on the frozen backbone's states.

The floor every method should clear. In the serving pool its rows join the deep-prompt forward with a
zero-length prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .base import Method, MethodConfig, register


@dataclass
class LinearProbeConfig(MethodConfig):
    method: ClassVar[str] = "linear-probe"


@register
class LinearProbe(Method):
    name: ClassVar[str] = "linear-probe"
    description: ClassVar[str] = "only the task head trains on the frozen backbone (the floor)"
    config_class: ClassVar[type[MethodConfig]] = LinearProbeConfig
    default_lr: ClassVar[float] = 5e-3
