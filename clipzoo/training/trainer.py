"""`ClipzooTrainer`: the HF `Trainer` with global-batch contrastive losses under several processes.

Single process: the model's own `forward(return_loss=True)` computes the loss, exactly as in transformers.

Several processes (DDP/FSDP through Accelerate, `torchrun`, `accelerate launch`): a contrastive loss must see the
negatives of every process. The trainer then asks the model for its outputs without a loss and calls the model's
`loss_from_outputs(outputs, inputs, gather=...)`, passing `clipzoo.modeling.losses.gather_features`. Each process
computes the same global-batch loss, and the parameter gradients equal those of one process on the whole batch
(`logit_scale` included; `tests/test_losses_distributed.py` checks it). Models without `loss_from_outputs` that return
CLIP-style embeddings (`image_embeds`, `text_embeds`, a `logit_scale` parameter) get the symmetric InfoNCE, so a plain
transformers `CLIPModel` trains correctly too.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer
from transformers.utils import logging

from clipzoo.modeling import losses


logger = logging.get_logger(__name__)

__all__ = ["ClipzooTrainer", "sync_batchnorm"]


# Device types whose torch backends implement SyncBatchNorm's collectives (NCCL / oneCCL / HCCL).
SYNC_BATCHNORM_DEVICES = ("cuda", "xpu", "hpu")


def sync_batchnorm(model: torch.nn.Module, world_size: int, device_type: str) -> torch.nn.Module:
    """BatchNorm -> `torch.nn.SyncBatchNorm` for multi-process training on accelerators, as the official GroupViT does.

    Only on the device types in `SYNC_BATCHNORM_DEVICES` (cuda, xpu, hpu): torch's SyncBatchNorm has no CPU kernel and
    other backends (mps, npu, ...) are not known to support it, so there the BatchNorm statistics stay per process (a
    warning says so). The converted modules keep their parameter and buffer names, so checkpoints load into the plain
    model.

    Args:
        model (`torch.nn.Module`): the model; converted in place where possible.
        world_size (`int`): number of training processes.
        device_type (`str`): `"cuda"`, `"xpu"`, `"cpu"`, ...

    Returns:
        `torch.nn.Module`: the model to train.
    """
    has_batchnorm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if world_size <= 1 or not has_batchnorm:
        return model
    if device_type not in SYNC_BATCHNORM_DEVICES:
        logger.warning(
            "Training on %d %s processes: torch's SyncBatchNorm runs only on %s, so BatchNorm statistics are per "
            "process (the official recipe synchronises them).",
            world_size,
            device_type,
            "/".join(SYNC_BATCHNORM_DEVICES),
        )
        return model
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def _clip_loss_from_outputs(model: torch.nn.Module, outputs: Any) -> torch.Tensor:
    """Global-batch InfoNCE for models returning CLIP embeddings (e.g. transformers' `CLIPModel`)."""
    image_embeds = torch.nn.functional.normalize(outputs["image_embeds"], dim=-1)
    text_embeds = torch.nn.functional.normalize(outputs["text_embeds"], dim=-1)
    return losses.clip_loss(image_embeds, text_embeds, model.logit_scale.exp(), gather=True)


class ClipzooTrainer(Trainer):
    """A `transformers.Trainer` whose contrastive losses are computed over the global batch.

    Use it exactly like `Trainer`; collators must set `return_loss=True`, and `remove_unused_columns=False` is needed
    because collators consume raw columns (images, captions).

    Examples:

    ```python
    >>> from transformers import TrainingArguments
    >>> from clipzoo.training.trainer import ClipzooTrainer
    >>> trainer = ClipzooTrainer(model=model, args=TrainingArguments("out", remove_unused_columns=False),
    ...                          train_dataset=ds, data_collator=collator)  # doctest: +SKIP
    >>> trainer.train()  # doctest: +SKIP
    ```
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Our losses are per-batch means; never pass `num_items_in_batch` into a forward that happens to take **kwargs.
        self.model_accepts_loss_kwargs = False

    def get_decay_parameter_names(self, model: torch.nn.Module) -> list[str]:
        """The model's own weight-decay grouping when it declares one (`weight_decay_rule`), else the Trainer's.

        `"exclude_1d_and_bias"` (GroupViT's official optimiser): every parameter is decayed except `*.bias` and the
        1-D ones. Norm weights (LayerNorm, GroupNorm, BatchNorm) are excluded by module type, so the rule also holds
        where shapes are lost: FSDP with flat parameters (FSDP1) turns every parameter into a 1-D shard, and a shape
        test alone would decay nothing. Where shapes are real (some parameter has 2 or more dimensions, or DeepSpeed's
        `ds_shape` records them), any other 1-D parameter is excluded too, as the official shape test does. peft
        wrappers forward the attribute to the base model.
        """
        rule = getattr(model, "weight_decay_rule", None)
        if rule is None:
            return super().get_decay_parameter_names(model)
        if rule != "exclude_1d_and_bias":
            raise ValueError(f"Unknown weight_decay_rule {rule!r} on {type(model).__name__}.")
        from torch.nn.modules.batchnorm import _BatchNorm
        from transformers.trainer_pt_utils import get_parameter_names

        names = get_parameter_names(model, [torch.nn.LayerNorm, torch.nn.GroupNorm, _BatchNorm], [r"(?:^|\.)bias$"])
        parameters = dict(model.named_parameters(remove_duplicate=False))
        shapes_real = any(p.ndim > 1 for p in parameters.values())

        def one_dimensional(p: torch.Tensor) -> bool:
            if hasattr(p, "ds_shape"):
                return len(p.ds_shape) == 1
            return shapes_real and p.ndim == 1

        return [name for name in names if not one_dimensional(parameters[name])]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if losses.get_world_size() <= 1 or not self.model.training:
            return super().compute_loss(model, inputs, return_outputs=return_outputs)
        unwrapped = self.accelerator.unwrap_model(model)
        local_inputs = {**inputs, "return_loss": False}
        outputs = model(**local_inputs)
        if hasattr(unwrapped, "loss_from_outputs"):
            loss = unwrapped.loss_from_outputs(outputs, inputs, gather=losses.gather_features)
        elif hasattr(unwrapped, "logit_scale") and "image_embeds" in outputs:
            loss = _clip_loss_from_outputs(unwrapped, outputs)
        else:
            raise TypeError(
                f"{type(unwrapped).__name__} defines no `loss_from_outputs` and returns no CLIP embeddings, so its "
                "loss cannot be computed over the global batch under several processes."
            )
        return (loss, outputs) if return_outputs else loss
