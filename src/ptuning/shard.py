"""Sharded frozen weights (``--shard-backbone``): a backbone larger than one device, split across processes.

Under data parallelism every process holds a whole copy of the backbone. A frozen backbone needs no more: no
gradient or optimizer state of its own, only its weights during a forward and a backward pass. So each process
keeps ``1/N`` of them, and every layer gathers its full weights just before it runs and frees them right after
(PyTorch's FSDP2, ``torch.distributed.fsdp.fully_shard``: one unit per layer block, one for the word embeddings
and one, the root, for the rest of the encoder). Peak weight memory becomes ``1/N`` of the backbone plus one layer.

The trainable part (prompt and head) stays whole on every process and trains under Accelerate's ordinary
data-parallel wrapper (DDP), which is told to leave the sharded weights alone. This keeps everything downstream
as it is: the prompt and head are plain tensors on every process, so artifacts, checkpoints and ``--resume``
work unchanged, and the prompt's gradient is averaged across processes as in any data-parallel run.

Launch it as any multi-process run, with ``--shard-backbone`` (``configs/accelerate/two-processes.yaml``; on CPUs
set ``ACCELERATE_USE_CPU=1``, gloo; on GPUs it is NCCL). Accelerate's own ``distributed_type: FSDP`` is not the
way: Accelerate 1.15 switches to FSDP only for GPU-like process groups (``AcceleratorState.__init__`` leaves
``MULTI_CPU`` as DDP, silently), and it wraps the whole model, which would shard the prompt and head too.
"""

from __future__ import annotations

from torch import nn

from .errors import PTuningError


def parameter_bytes(module: nn.Module) -> int:
    """Bytes of parameters this process holds (its own shard of a sharded one)."""
    total = 0
    for p in module.parameters():
        local = p.to_local() if hasattr(p, "to_local") else p  # a DTensor holds one shard here
        total += local.numel() * local.element_size()
    return total


def _check_shardable(model, accelerator) -> None:
    """One-line refusals: nothing to shard across, or weights that train (they would need FSDP's full machinery)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise PTuningError(
            f"--shard-backbone runs under a plain multi-process launch, not Accelerate's "
            f"{accelerator.distributed_type} mode (which would shard the prompt too): use "
            "configs/accelerate/two-processes.yaml"
        )
    trainable = [n for n, p in model.encoder.backbone.named_parameters() if p.requires_grad]
    if trainable:
        raise PTuningError(
            f"--shard-backbone shards a frozen backbone, and --method {model.config.method} trains "
            f"{len(trainable)} of its weights; drop --shard-backbone"
        )


def shard_frozen_backbone(model, accelerator) -> str:
    """Shard ``model``'s frozen backbone across the run's processes; a line saying what this process now holds.

    Call it before ``accelerator.prepare``. With one process there is nothing to shard across: it says so.
    """
    _check_shardable(model, accelerator)
    before = parameter_bytes(model.encoder.backbone)
    if accelerator.num_processes == 1:
        return "--shard-backbone: one process, nothing to shard across (launch several: see the README)"
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    encoder, backbone = model.encoder, model.encoder.backbone
    mesh = init_device_mesh(accelerator.device.type, (accelerator.num_processes,))
    for block in encoder.injector.layer_blocks(backbone):  # the family names its blocks
        fully_shard(block, mesh=mesh)
    fully_shard(encoder.word_embeddings(), mesh=mesh)
    fully_shard(encoder, mesh=mesh)  # the root unit: input-level prompts call the word embeddings before the backbone
    frozen = [f"encoder.backbone.{name}" for name, _ in backbone.named_parameters()]
    frozen += [f"encoder.backbone.{name}" for name, _ in backbone.named_buffers()]
    model._ddp_params_and_buffers_to_ignore = frozen  # DDP replicates and averages only the prompt and head
    after = parameter_bytes(backbone)
    return (
        f"--shard-backbone: this process holds {_size(after)} of the backbone's {_size(before)} of weights "
        f"({accelerator.num_processes} processes)"
    )


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


__all__ = ["parameter_bytes", "shard_frozen_backbone"]
