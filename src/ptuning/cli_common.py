"""What every command module shares: the ``--device`` help and silencing transformers' weight-loading bar.

A module of its own so that the command modules (``cli_inspect``, ``cli_serve``, ``sweep/command`` ...) need not
import ``cli.py``, which imports them to register their commands. Light at import: ``ptuning --help`` stays fast.
"""

from __future__ import annotations

DEVICE_HELP = "auto (the GPU when there is one) | cpu | cuda | cuda:N | mps."


def quiet_weight_loading() -> None:
    """Silence transformers' "Loading weights" bar (printed at every backbone load, three times in
    ``demo``); our own bars stay, and so do the hub's download bars unless the user turned them off."""
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as hf_logging

    hub_off = are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # also turns the hub's off ...
    if not hub_off:
        enable_progress_bars()  # ... which were on: downloads can take minutes
