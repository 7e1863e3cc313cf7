"""Forward-only prompt search: Black-Box Tuning (Sun et al., ICML 2022) with CMA-ES, ``--optimizer cma``.

BBT's observation: a prompt of ``D`` numbers has a low intrinsic dimension, so it can be searched in a random
``d``-dimensional subspace (``d = 500`` against ``D`` of tens of thousands) by a derivative-free optimiser.
Here the searched parameters are::

    theta = theta0 + A z        z in R^d,  A in R^(D x d) fixed,  A[i, j] ~ N(0, (s_i / (sqrt(d) sigma0))^2)

``theta0`` is where the run starts (the method's own initialisation, or whatever the parameters hold when the
run starts, e.g. a prompt loaded from an artifact); ``sigma0`` is CMA-ES's initial step size (``--cma-sigma``),
so a first candidate ``z ~ N(0, sigma0^2 I)`` moves entry ``i`` by about ``s_i``, the typical size of that
entry (BBT's rule, with the word embeddings' std replaced by each block's own scale, below). ``A`` is drawn
once from the run's seed. CMA-ES (the ``cma`` package) adapts the mean, step size and covariance of ``z`` from
the losses of ``--cma-popsize`` candidates per batch. Each candidate is scored by one forward pass under
``torch.no_grad`` on the same batch, with dropout off (a deterministic objective per batch): no
backward pass runs and no gradient is ever allocated, so training needs inference memory only. After each step
the parameters hold ``theta0 + A m``, ``m`` CMA-ES's mean (its recommendation under a noisy mini-batch
objective); evaluation, the best-dev artifact and early stopping work exactly as with gradient steps.

**The head is searched too.** BBT keeps the backbone's MLM head and a verbalizer, so the prompt is all it
searches. ptuning's heads are new linear layers: a zero head gives every prompt the same loss (nothing to
search), and a fixed random head leaves the prompt to push features into a random readout. So ``theta`` is
the prompt (what the method declares, :attr:`~ptuning.method.base.Method.search_parameter_names`) followed by
every head parameter, and one ``z`` moves both: the prompt at :meth:`~ptuning.method.base.Method.search_scale`
(ptv2: 1.0, the RMS of the backbone's keys and values; prompt-tuning: the word embeddings' RMS), the head at
``1/sqrt(H)`` per entry (a linear readout of ``H`` unit-scale features whose logits then move by O(1)).
Trainable parameters outside ``theta`` (ptv2's ``--reparam`` MLP, prompt-tuning's ``--residual`` MLP) stay at
their random initialisation, a fixed map of the searched prompt. Training devices that change the loss
(ptv2's ``--perturb``) do not apply: candidates are scored by the task's plain loss.

:class:`SearchSpace` is also what the server's scoring route uses (``serve/scoring.py``): a client that runs
CMA-ES elsewhere sends ``z`` vectors, never the prompt itself.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .errors import PTuningError
from .trainconfig import TrainConfig

MAX_PROJECTION_ENTRIES = 2**28  # A is D x d float32: 1 GiB


def require_cma():
    """The ``cma`` package, or a one-line error saying how to install it."""
    try:
        import cma
    except ImportError:
        raise PTuningError("--optimizer cma needs the cma package: pip install 'ptuning[search]' (or cma)") from None
    return cma


def searchable_methods() -> list[str]:
    from .method import REGISTRY

    return [name for name, cls in REGISTRY.items() if cls.search_parameter_names]


class SearchSpace:
    """``theta = theta0 + A z`` over a model's prompt and head parameters (see the module docstring).

    ``blocks``: ``(parameter, scale)`` pairs, in order; :meth:`for_model` builds them from a model.
    """

    def __init__(self, blocks: list[tuple[nn.Parameter, float]], dim: int, sigma: float, seed: int) -> None:
        self.params = [p for p, _ in blocks]
        self.dim = dim
        self.size = sum(p.numel() for p in self.params)
        if self.size * dim > MAX_PROJECTION_ENTRIES:
            raise PTuningError(
                f"--cma-dim {dim} projects onto {self.size:,} prompt and head values: the projection would hold "
                f"{self.size * dim:,} numbers (at most {MAX_PROJECTION_ENTRIES:,}); lower --cma-dim or --prompt-length"
            )
        self.start = torch.cat([p.detach().flatten().float().cpu() for p in self.params])  # (D,)
        per_entry = torch.cat([torch.full((p.numel(),), scale) for p, scale in blocks])  # (D,)
        generator = torch.Generator().manual_seed(seed)
        self.projection = torch.randn(self.size, dim, generator=generator)  # (D, d)
        self.projection *= (per_entry / (math.sqrt(dim) * sigma))[:, None]

    @classmethod
    def for_model(cls, model, dim: int, sigma: float, seed: int) -> SearchSpace:
        """The space of ``model``'s prompt (the method's search parameters) and head."""
        prompt = model.method.search_parameters()
        if not prompt:
            raise PTuningError(
                f"--optimizer cma searches a prompt, and --method {model.config.method} declares none "
                f"(methods that do: {', '.join(searchable_methods())})"
            )
        head_scale = 1.0 / math.sqrt(model.encoder.geometry.hidden_size)
        scale = model.method.search_scale()
        blocks = [(p, scale) for p in prompt] + [(p, head_scale) for p in model.head.parameters()]
        return cls(blocks, dim, sigma, seed)

    @torch.no_grad()
    def set(self, z) -> None:
        """Write ``theta0 + A z`` into the parameters (``z``: ``d`` numbers)."""
        device = self.params[0].device
        if self.projection.device != device:  # the model moved (Accelerate, --device): follow it
            self.start, self.projection = self.start.to(device), self.projection.to(device)
        z = torch.as_tensor(np.asarray(z, dtype=np.float32), device=device).reshape(self.dim)  # (d,)
        theta = self.start + self.projection @ z  # (D,)
        offset = 0
        for p in self.params:
            p.copy_(theta[offset : offset + p.numel()].view_as(p))
            offset += p.numel()


def candidate_loss(model, space: SearchSpace, z, batch: dict, labels: torch.Tensor, loss_fn) -> torch.Tensor:
    """The loss of candidate ``z`` on one batch: a forward pass, nothing recorded for autograd."""
    space.set(z)
    with torch.no_grad():  # not inference_mode: an activation cache filled here is written to again outside it
        return loss_fn(model(**batch), labels).float()


def for_cma(losses: list[float]) -> list[float]:
    """Losses CMA-ES can rank: a non-finite one (a candidate that overflowed) ranks below every finite one."""
    finite = [x for x in losses if math.isfinite(x)]
    worst = max(finite) + 1.0 if finite else 1e30
    return [x if math.isfinite(x) else worst for x in losses]


class CmaUpdate:
    """``--optimizer cma``: each training batch is one CMA-ES generation (see the module docstring).

    The same interface as :class:`ptuning.optim.GradientUpdate`. CMA-ES's state (covariance, evolution paths) is
    not checkpointed (``--resume`` is refused when the run starts): an interrupted search starts again.
    """

    lr = None
    checkpoints = False

    def __init__(self, model, config: TrainConfig, n_features: int) -> None:
        cma = require_cma()
        self.config = config
        self.space = SearchSpace.for_model(model, config.cma_dim, config.cma_sigma, config.seed)
        options = {"popsize": config.cma_popsize, "seed": np.nan, "verbose": -9}  # numpy is seeded by the run
        self.strategy = cma.CMAEvolutionStrategy(np.zeros(config.cma_dim), config.cma_sigma, options)

    @classmethod
    def check(cls, model, config: TrainConfig) -> None:
        """Refuse, before anything is written, a run this update cannot do."""
        require_cma()
        SearchSpace.for_model(model, config.cma_dim, config.cma_sigma, config.seed)

    @classmethod
    def planned_lr(cls, model, config: TrainConfig) -> None:
        """No learning rate: what the run records as ``lr``."""
        return None

    def describe(self) -> str:
        return (
            f"CMA-ES over z of {self.space.dim} numbers projected onto {self.space.size:,} prompt and head values, "
            f"{self.config.cma_popsize} candidates per batch, sigma {self.config.cma_sigma:g}: forward passes only"
        )

    def remedy(self) -> str:
        return f"lower --cma-sigma (this run used {self.config.cma_sigma:g})"

    def resume(self, output_dir, model) -> dict:
        raise PTuningError("--resume does not apply to --optimizer cma: CMA-ES's state is not checkpointed")

    def prepare(self, accelerator, model):
        return accelerator.prepare(model)

    def step(self, accelerator, model, unwrapped, batch: dict, labels: torch.Tensor, loss_fn) -> float:
        """Score a population of candidates on ``batch``, update CMA-ES, leave its mean in the parameters.

        Returns the population's mean loss (non-finite candidates left out). Across processes every candidate's
        loss is the mean over the processes' shards, so every process's CMA-ES takes the same step. An attached
        activation cache (``--prefix-layers top:K``) serves every candidate: only the prompted layers run.
        """
        training = model.training
        model.eval()  # dropout off: every candidate is scored by the same function
        try:
            candidates = self.strategy.ask()
            losses = []
            for z in candidates:
                loss = candidate_loss(model, self.space, z, batch, labels, loss_fn)
                losses.append(float(accelerator.reduce(loss.clone(), reduction="mean")))
            self.strategy.tell(candidates, for_cma(losses))
        finally:
            self.space.set(self.strategy.mean)
            model.train(training)
        finite = [x for x in losses if math.isfinite(x)]
        return float(np.mean(finite)) if finite else math.nan

    def save(self, output_dir, trainable: dict, loop: dict, run: dict) -> None:
        """Nothing: see the class docstring."""
