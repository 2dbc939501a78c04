"""The maths of APE / APE-T and Tip-Adapter on pre-computed, L2-normalised CLIP features.

Pure torch functions, no state, so the model (`modeling_ape.py`), the fit procedure (`clipzoo/training/ape.py`) and
the benchmarks share one implementation. Shapes: N query features, C classes, NK cache entries, D feature channels,
Q selected channels.

Layout differs from the official code in one place: the text classifier is stored class-major, `text_weights` (C, D)
(the official `clip_weights` is D × C), and the cache keeps an explicit label per entry (`cache_labels`, NK) instead of
relying on "K consecutive rows per class", so nothing here assumes a sorted cache.

References: Zhu et al., "Not All Features Matter: Enhancing Few-shot CLIP with Adaptive Prior Refinement" (ICCV 2023,
arXiv 2304.01195); Zhang et al., "Tip-Adapter" (ECCV 2022, arXiv 2207.09519).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


__all__ = [
    "KL_EPSILON",
    "TEXT_LOGIT_SCALE",
    "ape_criterion",
    "ape_logits",
    "ape_t_logits",
    "apply_category_residual",
    "cache_affinity",
    "cache_divergence_bits",
    "grid_search",
    "inter_class_similarity",
    "official_grid",
    "refine",
    "select_channels",
    "tip_adapter_logits",
]

TEXT_LOGIT_SCALE = 100.0
# The official KL edge adds 1e-6 to both the one-hot values and the softmax before the log; keep it to reproduce.
KL_EPSILON = 1e-6


def inter_class_similarity(
    text_weights: torch.Tensor, cache_keys: torch.Tensor | None = None, cache_labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-channel mean product between features of *different* classes (the S term of the APE criterion).

    For each class i the set X_i holds its text vector and (if given) its cache keys. The paper's definition is
    `S_k = sum_{i != j} sum_{x in X_i, y in X_j} x_k * y_k / count`. With s_i = sum_{x in X_i} x and s = sum_i s_i the
    double sum equals `s ⊙ s − sum_i s_i ⊙ s_i` and the count `(sum_i M_i)^2 − sum_i M_i^2` (M_i = |X_i|); with equal
    M_i this is the official `(C² − C) M²`. O(C·M·D) instead of O(C²·M²·D).

    Args:
        text_weights (`torch.Tensor` of shape `(C, D)`): text classifier, one row per class.
        cache_keys (`torch.Tensor` of shape `(NK, D)`, *optional*): cache keys; `None` is the "text-only" mode.
        cache_labels (`torch.Tensor` of shape `(NK,)`, *optional*): class index of every cache key.

    Returns:
        `torch.Tensor` of shape `(D,)`.
    """
    num_classes = text_weights.shape[0]
    if num_classes < 2:
        raise ValueError(f"The inter-class similarity needs at least 2 classes, got {num_classes}.")
    class_sums = text_weights.clone()
    class_sizes = torch.ones(num_classes, dtype=text_weights.dtype, device=text_weights.device)
    if cache_keys is not None:
        if cache_labels is None:
            raise ValueError("cache_labels must be given with cache_keys.")
        class_sums.index_add_(0, cache_labels, cache_keys.to(class_sums.dtype))
        class_sizes.index_add_(0, cache_labels, torch.ones_like(cache_labels, dtype=class_sizes.dtype))
    total = class_sums.sum(0)
    cross_sum = total * total - (class_sums * class_sums).sum(0)
    count = class_sizes.sum() ** 2 - (class_sizes * class_sizes).sum()
    return cross_sum / count


def ape_criterion(
    text_weights: torch.Tensor,
    cache_keys: torch.Tensor | None,
    cache_labels: torch.Tensor | None,
    weights: Sequence[float],
) -> torch.Tensor:
    """The prior-refinement criterion `J = −w0 · S + w1 · V` per channel (large = keep).

    `S` is `inter_class_similarity` (text + cache, or text only when `cache_keys` is `None`); `V` is the unbiased
    variance of the text classifier across classes (the official code uses the text classifier only for `V`).

    Returns:
        `torch.Tensor` of shape `(D,)`.
    """
    if len(weights) != 2:
        raise ValueError(f"criterion weights must be a pair (w0, w1), got {weights!r}.")
    similarity = inter_class_similarity(text_weights, cache_keys, cache_labels)
    variance = torch.var(text_weights, dim=0, unbiased=True)
    return -weights[0] * similarity + weights[1] * variance


def select_channels(criterion: torch.Tensor, num_channels: int) -> torch.Tensor:
    """Indices of the `num_channels` largest criterion values (descending, as `torch.topk`)."""
    feature_dim = criterion.shape[-1]
    if not 0 < num_channels <= feature_dim:
        raise ValueError(
            f"The number of selected channels Q must be in [1, {feature_dim}] (the feature dimension), "
            f"got {num_channels}."
        )
    return torch.topk(criterion, k=num_channels).indices


def refine(features: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The selected channels of each row, re-normalised to unit L2 norm (APE's refined features f', F', W')."""
    return F.normalize(features[..., indices], dim=-1)


def cache_affinity(features: torch.Tensor, cache_keys: torch.Tensor) -> torch.Tensor:
    """Cosine similarities `f Fᵀ` (N, NK) for unit-norm rows."""
    return features @ cache_keys.t()


def cache_divergence_bits(
    refined_keys: torch.Tensor, refined_text: torch.Tensor, cache_labels: torch.Tensor
) -> torch.Tensor:
    """The per-entry KL(L ‖ softmax(F' W'ᵀ)) in bits with the official 1e-6 epsilons (APE's cache-vs-text edge).

    The softmax is over raw cosines (no logit scale), as in the official code.

    Returns:
        `torch.Tensor` of shape `(NK,)`.
    """
    num_classes = refined_text.shape[0]
    probs = (refined_keys @ refined_text.t()).softmax(dim=-1)
    values = F.one_hot(cache_labels, num_classes).to(probs.dtype)
    return (values * torch.log2((values + KL_EPSILON) / (probs + KL_EPSILON))).sum(-1)


def _cache_logits(affinity: torch.Tensor, values: torch.Tensor, beta: float | torch.Tensor) -> torch.Tensor:
    # Tip-Adapter's affinity exp(−β(1 − cos)) turns cosines into positive weights sharpened by β.
    return torch.exp(-beta * (1.0 - affinity)) @ values


def tip_adapter_logits(
    features: torch.Tensor,
    text_weights: torch.Tensor,
    cache_keys: torch.Tensor,
    cache_labels: torch.Tensor,
    alpha: float | torch.Tensor,
    beta: float | torch.Tensor,
) -> torch.Tensor:
    """Tip-Adapter: `100 · f Wᵀ + α · exp(−β(1 − f Fᵀ)) · L` on full features (Tip-Adapter-F: trained `cache_keys`)."""
    values = F.one_hot(cache_labels, text_weights.shape[0]).to(features.dtype)
    text = TEXT_LOGIT_SCALE * features @ text_weights.t()
    return text + alpha * _cache_logits(cache_affinity(features, cache_keys), values, beta)


def ape_logits(
    features: torch.Tensor,
    text_weights: torch.Tensor,
    cache_keys: torch.Tensor,
    cache_labels: torch.Tensor,
    indices: torch.Tensor,
    alpha: float | torch.Tensor,
    beta: float | torch.Tensor,
    gamma: float | torch.Tensor,
) -> torch.Tensor:
    """Training-free APE: `100 · f Wᵀ + α · exp(−β(1 − f' F'ᵀ)) · (L ⊙ exp(γ · KL_bits))`.

    The text edge uses the full features; the cache edge and the KL edge use the refined (selected, re-normalised)
    channels.
    """
    refined_text = refine(text_weights, indices)
    refined_keys = refine(cache_keys, indices)
    kl = cache_divergence_bits(refined_keys, refined_text, cache_labels)
    values = F.one_hot(cache_labels, text_weights.shape[0]).to(features.dtype) * torch.exp(gamma * kl)[:, None]
    text = TEXT_LOGIT_SCALE * features @ text_weights.t()
    return text + alpha * _cache_logits(cache_affinity(refine(features, indices), refined_keys), values, beta)


def apply_category_residual(
    text_weights: torch.Tensor,
    cache_keys: torch.Tensor,
    cache_labels: torch.Tensor,
    indices: torch.Tensor,
    residual: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """APE-T's category residual (C, Q): added to W and to every cache key of the same class, on the Q channels only.

    No re-normalisation afterwards (as in the official `APE_Training.forward`).
    """
    new_text = text_weights.index_add(1, indices, residual)
    new_keys = cache_keys.index_add(1, indices, residual[cache_labels])
    return new_text, new_keys


def ape_t_logits(
    features: torch.Tensor,
    text_weights: torch.Tensor,
    cache_keys: torch.Tensor,
    cache_labels: torch.Tensor,
    indices: torch.Tensor,
    residual: torch.Tensor,
    value_weights: torch.Tensor,
    alpha: float | torch.Tensor,
    beta: float | torch.Tensor,
) -> torch.Tensor:
    """APE-T: `100 · f (W + R)ᵀ + α · exp(−β(1 − f (F + R_L)ᵀ)) · (L ⊙ v)`, all in full D channels."""
    new_text, new_keys = apply_category_residual(text_weights, cache_keys, cache_labels, indices, residual)
    values = F.one_hot(cache_labels, text_weights.shape[0]).to(features.dtype) * value_weights[:, None]
    text = TEXT_LOGIT_SCALE * features @ new_text.t()
    return text + alpha * _cache_logits(cache_affinity(features, new_keys), values, beta)


def official_grid(scale: float, steps: int, start: float = 0.1) -> list[float]:
    """The official search grid `start + i · (scale − start) / steps`, i = 0..steps−1 (upper end excluded).

    β and α use `start=0.1`; APE's γ uses `start=0` (`i · scale / steps`).
    """
    if steps < 1:
        raise ValueError(f"search steps must be >= 1, got {steps}.")
    return [start + i * (scale - start) / steps for i in range(steps)]


def _count_correct(
    text: torch.Tensor, cache: torch.Tensor, labels: torch.Tensor, alphas: torch.Tensor
) -> torch.Tensor:
    """Correct predictions of `text + α · cache` for every α of an ascending grid, without an α axis in memory.

    For the true class y and another class c the logit difference is `d_c + α e_c` (d: text margin, e: cache margin),
    a line in α; y wins exactly when α lies in the open interval (max_{e_c>0} −d_c/e_c, min_{e_c<0} −d_c/e_c) and
    every c with e_c = 0 has d_c > 0. The interval's grid points are a contiguous index range found by `searchsorted`,
    and a difference array turns the ranges into counts: O(N·C + A) per (β, value set) instead of O(A·N·C). Exact
    ties (a measure-zero event for real-valued features) count as errors.

    Args:
        text (`(n, C)`), cache (`(b, n, G, C)`), labels (`(n,)`), alphas (`(A,)`, ascending, > 0).

    Returns:
        `torch.Tensor` of shape `(b, A, G)`: counts.
    """
    num_alphas = alphas.shape[0]
    d = text.gather(1, labels[:, None]) - text  # (n, C)
    d = d.scatter(1, labels[:, None], float("inf"))[None, :, None, :]  # the true class is no constraint
    neg_e = cache - cache.gather(-1, labels[None, :, None, None].expand(*cache.shape[:-1], 1))  # −e, (b, n, G, C)
    root = d / neg_e  # = −d/e
    lo = torch.where(neg_e < 0, root, -float("inf")).amax(-1)  # (b, n, G); e > 0: α > −d/e
    # e < 0: α < −d/e. e = 0 needs d > 0: d / +0 is +inf (no bound) for d > 0, −inf (empty) for d < 0, nan for a tie.
    hi = torch.where(neg_e >= 0, root, float("inf")).amin(-1)
    hi = torch.nan_to_num(hi, nan=-float("inf"), posinf=float("inf"), neginf=-float("inf"))
    first = torch.searchsorted(alphas, lo.contiguous(), right=True)  # first α > lo
    stop = torch.searchsorted(alphas, hi.contiguous(), right=False)  # first α >= hi
    stop = torch.where(stop > first, stop, first)
    diff = torch.zeros(*lo.shape[:1], lo.shape[2], num_alphas + 1, dtype=torch.long, device=lo.device)
    ones = torch.ones_like(first).transpose(1, 2)
    diff.scatter_add_(2, first.transpose(1, 2), ones)
    diff.scatter_add_(2, stop.transpose(1, 2), -ones)
    return diff.cumsum(2)[..., :num_alphas].transpose(1, 2)


def grid_search(
    text_logits: torch.Tensor,
    affinity: torch.Tensor,
    values: torch.Tensor,
    labels: torch.Tensor,
    betas: Sequence[float],
    alphas: Sequence[float],
    max_elements: int = 1 << 21,
) -> tuple[tuple[int, int, int], torch.Tensor]:
    """Exhaustive (β, α, value-set) search of `text_logits + α · exp(−β(1 − affinity)) · values[g]`, vectorised.

    Counts correct top-1 predictions for every grid point. The winner is the first maximum in (β, α, g) row-major
    order, which is the point the official strict `acc > best` triple loop keeps. For APE, `values[g]` is
    `L ⊙ exp(γ_g · KL)`; for Tip-Adapter / APE-T a single value set (G = 1). One matmul per β chunk gives the cache
    logits of every value set; the α axis is resolved by `_count_correct`'s interval argument.

    Args:
        text_logits (`torch.Tensor` of shape `(N, C)`): the text edge (already ×100).
        affinity (`torch.Tensor` of shape `(N, NK)`): cosines between queries and cache keys.
        values (`torch.Tensor` of shape `(G, NK, C)`): cache values, one set per third grid axis.
        labels (`torch.Tensor` of shape `(N,)`): true classes.
        betas, alphas (`Sequence[float]`): the grids (α > 0).
        max_elements (`int`): memory budget (elements) of the largest intermediate; rows and β are chunked to fit.

    Returns:
        `((beta_index, alpha_index, g_index), correct)` with `correct` of shape `(B, A, G)` (int64 counts).
    """
    num_queries, num_classes = text_logits.shape
    num_values = values.shape[0]
    if num_queries == 0:
        raise ValueError("The validation split used for the search is empty.")
    if min(alphas) <= 0 or list(alphas) != sorted(alphas):
        raise ValueError(f"The α grid must be positive and ascending, got {list(alphas)[:5]}...")
    dtype = text_logits.dtype
    beta_t = torch.as_tensor(list(betas), dtype=dtype, device=text_logits.device)
    alpha_t = torch.as_tensor(list(alphas), dtype=dtype, device=text_logits.device)
    # (NK, G*C): one matmul gives the cache logits of every value set at once.
    stacked_values = values.to(dtype).permute(1, 0, 2).reshape(values.shape[1], num_values * num_classes)
    correct = torch.zeros(len(beta_t), len(alpha_t), num_values, dtype=torch.long, device=text_logits.device)
    per_row = max(num_values * num_classes, affinity.shape[1], 1)
    row_chunk = max(1, min(num_queries, max_elements // per_row))
    beta_chunk = max(1, min(len(beta_t), max_elements // (per_row * row_chunk)))
    for start in range(0, num_queries, row_chunk):
        rows = slice(start, start + row_chunk)
        text, dist, target = text_logits[rows], 1.0 - affinity[rows], labels[rows]
        for b0 in range(0, len(beta_t), beta_chunk):
            beta = beta_t[b0 : b0 + beta_chunk]
            cache = torch.exp(-beta[:, None, None] * dist) @ stacked_values  # (b, n, G*C)
            cache = cache.view(len(beta), -1, num_values, num_classes)
            correct[b0 : b0 + beta_chunk] += _count_correct(text, cache, target, alpha_t)
    best = int(torch.argmax(correct.flatten()))
    shape = correct.shape
    index = (best // (shape[1] * shape[2]), (best // shape[2]) % shape[1], best % shape[2])
    return index, correct
