"""Single-process tests of clipzoo.modeling.losses against explicit-loop references."""

import math

import pytest
import torch

from clipzoo.modeling.losses import (
    clip_loss,
    contrastive_loss,
    gather_features,
    get_rank,
    get_world_size,
    multi_positive_contrastive_loss,
    sigmoid_clip_loss,
    sigmoid_loss,
    soft_target_cross_entropy,
)


ATOL = 1e-6


def _log_softmax_ref(row: list[float], j: int) -> float:
    top = max(row)
    return row[j] - top - math.log(sum(math.exp(v - top) for v in row))


def _log_sigmoid_ref(z: float) -> float:
    # log(1 / (1 + e^-z)), written in the branch that does not overflow
    return -math.log1p(math.exp(-z)) if z >= 0 else z - math.log1p(math.exp(z))


def _ce_ref(logits: torch.Tensor, labels: list[int]) -> float:
    rows = logits.double().tolist()
    return -sum(_log_softmax_ref(rows[i], labels[i]) for i in range(len(rows))) / len(rows)


def _soft_ce_ref(logits: torch.Tensor, targets: torch.Tensor) -> float:
    rows, t = logits.double().tolist(), targets.double().tolist()
    total = 0.0
    for i in range(len(rows)):
        total -= sum(t[i][j] * _log_softmax_ref(rows[i], j) for j in range(len(rows[i])))
    return total / len(rows)


def _sigmoid_ref(logits: torch.Tensor, mask: torch.Tensor, bias: float) -> float:
    rows, m = logits.double().tolist(), mask.tolist()
    total = 0.0
    for i in range(len(rows)):
        for j in range(len(rows[i])):
            sign = 1.0 if m[i][j] else -1.0
            total -= _log_sigmoid_ref(sign * (rows[i][j] + bias))
    return total / len(rows)


def _embeds(n: int = 5, d: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    return image, text


def _logits(n: int, m: int, seed: int = 0) -> torch.Tensor:
    return 3 * torch.randn(n, m, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _random_mask(n: int, m: int, seed: int = 0) -> torch.Tensor:
    mask = torch.rand(n, m, generator=torch.Generator().manual_seed(seed)) < 0.3
    mask[torch.arange(n), torch.arange(n) % m] = True  # at least one positive per row
    return mask


def test_contrastive_loss_matches_loop_reference():
    logits = _logits(4, 6)
    assert contrastive_loss(logits).item() == pytest.approx(_ce_ref(logits, [0, 1, 2, 3]), abs=ATOL)
    labels = torch.tensor([5, 0, 0, 2])
    assert contrastive_loss(logits, labels).item() == pytest.approx(_ce_ref(logits, labels.tolist()), abs=ATOL)


def test_clip_loss_matches_loop_reference():
    image, text = _embeds()
    scale = 12.5
    sims = image @ text.t()
    n = sims.shape[0]
    ref_i2t = _ce_ref(scale * sims, list(range(n)))
    ref_t2i = _ce_ref(scale * sims.t(), list(range(n)))
    got = clip_loss(image, text, torch.tensor(scale, dtype=torch.float64))
    assert got.item() == pytest.approx((ref_i2t + ref_t2i) / 2, abs=ATOL)


def test_clip_loss_float32_close_to_reference():
    image, text = _embeds()
    got = clip_loss(image.float(), text.float(), torch.tensor(10.0))
    ref = clip_loss(image, text, torch.tensor(10.0, dtype=torch.float64))
    assert got.item() == pytest.approx(ref.item(), abs=1e-5)


@pytest.mark.parametrize("bias", [0.0, -3.5])
def test_sigmoid_loss_matches_loop_reference(bias):
    logits, mask = _logits(4, 6, seed=1), _random_mask(4, 6, seed=1)
    got = sigmoid_loss(logits, mask, logit_bias=bias if bias else None)
    assert got.item() == pytest.approx(_sigmoid_ref(logits, mask, bias), abs=ATOL)


def test_sigmoid_loss_accepts_float_mask_and_tensor_bias():
    logits, mask = _logits(3, 3, seed=2), _random_mask(3, 3, seed=2)
    got = sigmoid_loss(logits, mask.double(), logit_bias=torch.tensor(-1.0, dtype=torch.float64))
    assert got.item() == pytest.approx(_sigmoid_ref(logits, mask, -1.0), abs=ATOL)


def test_sigmoid_clip_loss_default_mask_is_identity():
    image, text = _embeds(seed=3)
    scale, bias = 10.0, -2.0
    got = sigmoid_clip_loss(image, text, torch.tensor(scale, dtype=torch.float64), bias)
    ref = _sigmoid_ref(scale * image @ text.t(), torch.eye(image.shape[0], dtype=torch.bool), bias)
    assert got.item() == pytest.approx(ref, abs=ATOL)


def test_soft_target_cross_entropy_matches_loop_reference():
    logits = _logits(4, 5, seed=4)
    targets = torch.rand(4, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    targets = targets / targets.sum(-1, keepdim=True)
    assert soft_target_cross_entropy(logits, targets).item() == pytest.approx(_soft_ce_ref(logits, targets), abs=ATOL)


def test_soft_target_cross_entropy_with_one_hot_targets_is_cross_entropy():
    logits = _logits(4, 5, seed=5)
    labels = torch.tensor([4, 0, 2, 2])
    one_hot = torch.nn.functional.one_hot(labels, 5).double()
    assert soft_target_cross_entropy(logits, one_hot).item() == pytest.approx(
        contrastive_loss(logits, labels).item(), abs=ATOL
    )


def test_multi_positive_matches_loop_reference():
    logits, mask = _logits(5, 5, seed=6), _random_mask(5, 5, seed=6)
    rows = mask.tolist()
    ref = 0.0
    for i, row in enumerate(rows):
        positives = [j for j, is_pos in enumerate(row) if is_pos]
        ref -= sum(_log_softmax_ref(logits[i].tolist(), j) for j in positives) / len(positives)
    assert multi_positive_contrastive_loss(logits, mask).item() == pytest.approx(ref / len(rows), abs=ATOL)


def test_multi_positive_with_identity_mask_is_contrastive_loss():
    logits = _logits(6, 6, seed=7)
    got = multi_positive_contrastive_loss(logits, torch.eye(6, dtype=torch.bool))
    assert got.item() == pytest.approx(contrastive_loss(logits).item(), abs=ATOL)


def test_multi_positive_rejects_rows_without_positive():
    mask = torch.eye(3, dtype=torch.bool)
    mask[1, 1] = False
    with pytest.raises(ValueError, match=r"rows \[1\]"):
        multi_positive_contrastive_loss(_logits(3, 3), mask)


def test_gradients_flow_to_logit_scale_and_bias():
    image, text = _embeds(seed=8)
    image.requires_grad_(True)
    log_scale = torch.tensor(math.log(10.0), dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    clip_loss(image, text, log_scale.exp()).backward()
    assert log_scale.grad is not None and log_scale.grad.abs() > 0
    assert image.grad is not None and image.grad.abs().sum() > 0
    log_scale.grad = None
    sigmoid_clip_loss(image, text, log_scale.exp(), bias).backward()
    assert log_scale.grad.abs() > 0 and bias.grad.abs() > 0


def test_logit_scale_gradient_matches_finite_difference():
    image, text = _embeds(seed=9)
    scale = torch.tensor(7.0, dtype=torch.float64, requires_grad=True)
    clip_loss(image, text, scale).backward()
    eps = 1e-6
    numeric = (clip_loss(image, text, scale.detach() + eps) - clip_loss(image, text, scale.detach() - eps)) / (2 * eps)
    assert scale.grad.item() == pytest.approx(numeric.item(), abs=1e-6)


def test_single_process_gather_is_identity():
    x = torch.randn(3, 4, requires_grad=True)
    assert get_world_size() == 1 and get_rank() == 0
    assert gather_features(x) is x


@pytest.mark.parametrize(
    "call",
    [
        lambda: clip_loss(torch.randn(3, 4), torch.randn(2, 4), torch.tensor(1.0)),
        lambda: sigmoid_loss(torch.randn(3, 4), torch.zeros(3, 3, dtype=torch.bool)),
        lambda: soft_target_cross_entropy(torch.randn(3, 4), torch.ones(3, 3) / 3),
        lambda: contrastive_loss(torch.randn(3)),
    ],
)
def test_shape_errors_are_value_errors(call):
    with pytest.raises(ValueError):
        call()
