"""Contrastive losses shared by the clipzoo variants, single-process and over several processes.

Every loss here is a pure function of tensors. The ones that take logits (`contrastive_loss`, `sigmoid_loss`,
`soft_target_cross_entropy`, `multi_positive_contrastive_loss`) know nothing about processes; the ones that take
embeddings (`clip_loss`, `sigmoid_clip_loss`) gather them over processes first when `gather=True`.

Contract for trainers running several processes (DDP, `accelerate`, `transformers.Trainer`):

1. Every rank gathers its features with `gather_features` (an all-gather whose backward all-reduces, i.e. sums, the
   gradient over ranks and returns the local slice). `clip_loss(..., gather=True)` and
   `sigmoid_clip_loss(..., gather=True)` do this themselves; a loss built from other pieces (a multi-positive mask
   from label ids, extra captions) gathers every per-sample tensor it needs the same way, in the same order
   (`gather_features(label_ids)` then build the mask).
2. Every rank computes the FULL global-batch loss from the gathered tensors. Its value is identical on every rank
   and equals the single-process loss on the concatenated batch.
3. Call `loss.backward()` (or `accelerator.backward(loss)`) as usual: no `* world_size`, no rescaling of
   `logit_scale` or `logit_bias`. DDP averages the parameter gradients over ranks, which gives exactly the
   single-process global-batch gradients, `logit_scale` and `logit_bias` included (checked with 2 real processes
   in tests/test_losses_distributed.py). Why:
   - an encoder parameter: the global loss L is the same function on every rank, so each rank's gradient wrt the
     gathered features is dL/dF; the backward all-reduce turns it into world_size * dL/dF, whose local slice flows
     into the local encoder. DDP's mean over ranks then gives sum_r dL/dF_r * dF_r/dtheta = dL/dtheta.
   - `logit_scale` / `logit_bias`: used directly on every rank, each rank holds the full dL/ds; the mean of
     world_size equal values is dL/ds.
4. Requirements: every rank has the same local batch size (`accelerate`'s default `even_batches=True` ensures
   this) and every rank runs backward through the same gathered tensors (otherwise the backward all-reduce waits
   forever). Don't let the Trainer rescale the loss: `transformers.Trainer` multiplies it by `num_processes` when
   the model "accepts loss kwargs" (its forward has `**kwargs`) and the batch carries `labels`; set
   `accepts_loss_kwargs = False` on such a model.

The other gather found in the wild (open_clip's `gather_with_grad=False`: all-gather without autograd, then put the
local tensor back in its slot so only local rows keep their gradient) needs `loss * world_size` AND a rescaled
`logit_scale` (`s.detach() + (s - s.detach()) / world_size`) to match single-process training; without the latter,
`logit_scale` gets world_size times its gradient. `gather_features` needs neither.

Each rank computes the (world_size * batch)^2 logits, as open_clip does with `local_loss=False`; this costs
world_size times the compute of the local-rows-only formulation but keeps the contract above trivially correct.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


__all__ = [
    "clip_loss",
    "contrastive_loss",
    "gather_features",
    "get_rank",
    "get_world_size",
    "multi_positive_contrastive_loss",
    "sigmoid_clip_loss",
    "sigmoid_loss",
    "soft_target_cross_entropy",
]


def get_world_size() -> int:
    """Number of processes in the default process group; 1 when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def get_rank() -> int:
    """Rank of this process in the default process group; 0 when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return 0


class _AllGatherSumGrad(torch.autograd.Function):
    """All-gather along dim 0; backward sums the output gradient over ranks and returns this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x)
        ctx.rank, ctx.local_size = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        # Rank r's features reach the loss computed on every rank q, so dL_total/dx_r = sum_q dL_q/dF[slice r].
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad.narrow(0, ctx.rank * ctx.local_size, ctx.local_size)


def gather_features(x: torch.Tensor) -> torch.Tensor:
    """Concatenates `x` from every process along dim 0, in rank order, differentiably.

    The backward all-reduces (sums) the incoming gradient over processes and returns the local slice; see the module
    docstring for why that makes DDP's averaged gradients exact. Works for integer tensors too (label ids), which
    carry no gradient. Every process must pass a tensor of the same shape.

    Args:
        x (`torch.Tensor` of shape `(local_batch, ...)`): this process's rows.

    Returns:
        `torch.Tensor` of shape `(world_size * local_batch, ...)`; `x` itself on a single process.
    """
    if get_world_size() == 1:
        return x
    if not (x.requires_grad and torch.is_grad_enabled()):
        parts = [torch.empty_like(x) for _ in range(get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)
    return _AllGatherSumGrad.apply(x)


def contrastive_loss(logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of each row of `logits` against its positive column (InfoNCE in one direction).

    Args:
        logits (`torch.Tensor` of shape `(n, m)`): similarity logits; row i's positive is column `labels[i]`.
        labels (`torch.Tensor` of shape `(n,)`, *optional*): positive column per row; defaults to `arange(n)`
            (pairs on the diagonal).

    Returns:
        Scalar `torch.Tensor`: mean over rows of `-log softmax(logits[i])[labels[i]]`.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be 2-D (n, m), got shape {tuple(logits.shape)}")
    if labels is None:
        labels = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, labels)


def _check_embeds(image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> None:
    if image_embeds.ndim != 2 or text_embeds.ndim != 2 or image_embeds.shape != text_embeds.shape:
        raise ValueError(
            "image_embeds and text_embeds must both have shape (batch, dim), got "
            f"{tuple(image_embeds.shape)} and {tuple(text_embeds.shape)}"
        )


def clip_loss(
    image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor, gather: bool = True
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP): mean of image->text and text->image cross-entropy over the (global) batch.

    Args:
        image_embeds (`torch.Tensor` of shape `(batch, dim)`): L2-normalised image embeddings (the caller normalises,
            as the model does before computing its `logits_per_image`).
        text_embeds (`torch.Tensor` of shape `(batch, dim)`): L2-normalised text embeddings; row i pairs with image i.
        logit_scale (`torch.Tensor`, scalar): the already-exponentiated temperature `exp(t)`; may require grad.
        gather (`bool`, *optional*, defaults to `True`): under torch.distributed with several processes, gather the
            embeddings with `gather_features` so the loss is over the global batch (see the module docstring).

    Returns:
        Scalar `torch.Tensor`.

    Examples:

    ```python
    >>> import torch
    >>> from clipzoo.modeling.losses import clip_loss
    >>> image, text = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
    >>> loss = clip_loss(image, text, torch.tensor(10.0))
    ```
    """
    _check_embeds(image_embeds, text_embeds)
    if gather:
        image_embeds, text_embeds = gather_features(image_embeds), gather_features(text_embeds)
    logits_per_image = logit_scale * image_embeds @ text_embeds.t()
    return (contrastive_loss(logits_per_image) + contrastive_loss(logits_per_image.t())) / 2


def sigmoid_loss(
    logits: torch.Tensor, positive_mask: torch.Tensor, logit_bias: torch.Tensor | float | None = None
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss with an arbitrary (multi-positive) mask.

    Every (i, j) pair is an independent binary classification: `z_ij = logits[i, j] + logit_bias`,
    label `y_ij = +1` where `positive_mask[i, j]` else `-1`, loss term `-log sigmoid(y_ij * z_ij)`. As in SigLIP
    (Zhai et al. 2023, Algorithm 1) the terms are SUMMED over the whole n x m matrix and divided by n, the number of
    rows (images), not by n * m: the loss scale then does not shrink as the batch (and the number of negatives) grows.

    Args:
        logits (`torch.Tensor` of shape `(n, m)`): `logit_scale * image_embeds @ text_embeds.T`.
        positive_mask (`torch.Tensor` of shape `(n, m)`): bool (or 0/1) mask of positive pairs; any number per row.
        logit_bias (`torch.Tensor` or `float`, *optional*): SigLIP's learnable bias, added to every logit.

    Returns:
        Scalar `torch.Tensor`.
    """
    if logits.ndim != 2 or positive_mask.shape != logits.shape:
        raise ValueError(
            f"logits must be 2-D and positive_mask the same shape, got {tuple(logits.shape)} and "
            f"{tuple(positive_mask.shape)}"
        )
    if logit_bias is not None:
        logits = logits + logit_bias
    signs = 2 * positive_mask.to(logits.dtype) - 1
    return -F.logsigmoid(signs * logits).sum() / logits.shape[0]


def sigmoid_clip_loss(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    logit_scale: torch.Tensor,
    logit_bias: torch.Tensor | float | None = None,
    positive_mask: torch.Tensor | None = None,
    gather: bool = True,
) -> torch.Tensor:
    """`sigmoid_loss` from embeddings, over the global batch when several processes run.

    Args:
        image_embeds (`torch.Tensor` of shape `(batch, dim)`): L2-normalised image embeddings.
        text_embeds (`torch.Tensor` of shape `(batch, dim)`): L2-normalised text embeddings.
        logit_scale (`torch.Tensor`, scalar): the already-exponentiated scale; may require grad.
        logit_bias (`torch.Tensor` or `float`, *optional*): SigLIP's bias; may require grad.
        positive_mask (`torch.Tensor` of shape `(global_batch, global_batch)`, *optional*): positives over the
            GLOBAL batch (rows: gathered images, columns: gathered texts, in rank order). Build it from gathered ids,
            e.g. `ids = gather_features(label_ids); mask = ids[:, None] == ids[None, :]`. Defaults to the identity
            (pair i is the only positive of image i).
        gather (`bool`, *optional*, defaults to `True`): gather the embeddings with `gather_features`.

    Returns:
        Scalar `torch.Tensor`.
    """
    _check_embeds(image_embeds, text_embeds)
    if gather:
        image_embeds, text_embeds = gather_features(image_embeds), gather_features(text_embeds)
    logits = logit_scale * image_embeds @ text_embeds.t()
    if positive_mask is None:
        positive_mask = torch.eye(logits.shape[0], dtype=torch.bool, device=logits.device)
    return sigmoid_loss(logits, positive_mask, logit_bias)


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a target distribution per row.

    Args:
        logits (`torch.Tensor` of shape `(n, m)`).
        targets (`torch.Tensor` of shape `(n, m)`): non-negative, each row sums to 1.

    Returns:
        Scalar `torch.Tensor`: mean over rows of `-sum_j targets[i, j] * log_softmax(logits[i])[j]`.
    """
    if logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must have the same shape, got {tuple(logits.shape)} and {tuple(targets.shape)}"
        )
    return -(targets * F.log_softmax(logits, dim=-1)).sum(dim=-1).mean()


def multi_positive_contrastive_loss(logits: torch.Tensor, positive_mask: torch.Tensor) -> torch.Tensor:
    """InfoNCE with several positives per row: soft-target cross-entropy, targets uniform over each row's positives.

    The targets are `positive_mask[i] / positive_mask[i].sum()`, so each row's loss is the mean over its positives p
    of `-log softmax(logits[i])[p]`, with all positives kept in the softmax denominator (the soft-target form used by
    multi-caption / multi-label CLIP training). With an identity mask this is `contrastive_loss`. One direction only:
    for the text side call it again with `logits.T` and `positive_mask.T`.

    Args:
        logits (`torch.Tensor` of shape `(n, m)`).
        positive_mask (`torch.Tensor` of shape `(n, m)`): bool (or 0/1) mask; every row needs at least one positive.

    Returns:
        Scalar `torch.Tensor`.
    """
    mask = positive_mask.to(logits.dtype)
    counts = mask.sum(dim=-1, keepdim=True)
    if bool((counts == 0).any()):
        rows = torch.nonzero(counts.squeeze(-1) == 0).flatten().tolist()
        raise ValueError(f"positive_mask must have at least one positive per row; rows {rows} have none")
    return soft_target_cross_entropy(logits, mask / counts)
