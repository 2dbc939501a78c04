"""GroupViT losses against slow references; prompt expansion; the word extractor; 2 processes = 1 process."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from clipzoo.configuration.configuration_groupvit import ClipzooGroupViTConfig
from clipzoo.modeling.losses import gather_features, get_rank, get_world_size
from clipzoo.modeling.modeling_groupvit import (
    ClipzooGroupViTModel,
    groupvit_contrastive_loss,
    groupvit_group_background_loss,
    groupvit_multi_label_loss,
)
from clipzoo.processing.text_groupvit import (
    FULL_IMAGENET_TEMPLATES,
    SUBSET_IMAGENET_TEMPLATES,
    LexiconWordExtractor,
    build_prompt_texts,
    prompt_key,
)
from clipzoo.variants import get_variant


def _normed(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def _slow_multi_label(image, prompts, scale):
    """The formula written out with loops: mean over the image's K prompts of -log p(prompt | image), and
    -log p(image | prompt) for every prompt, each softmax over the whole batch."""
    batch, k, _ = prompts.shape
    flat = [(j, q) for j in range(batch) for q in range(k)]
    loss_image = 0.0
    for i in range(batch):
        logits = torch.stack([scale * image[i] @ prompts[j, q] for j, q in flat])
        log_norm = torch.logsumexp(logits, dim=0)
        loss_image += -sum(scale * image[i] @ prompts[i, q] - log_norm for q in range(k)) / k
    loss_text = 0.0
    for j, q in flat:
        logits = torch.stack([scale * prompts[j, q] @ image[i] for i in range(batch)])
        loss_text += -(logits[j] - torch.logsumexp(logits, dim=0))
    return 0.5 * (loss_image / batch + loss_text / (batch * k))


def _official_local_rows(image, prompts, scale, world):
    """The official code's per-rank computation (local rows vs gathered columns, one-hot rank labels built like
    `multi_label_loss`), for a simulated world; DDP averages the per-rank losses."""
    batch = image.shape[0] // world
    k = prompts.shape[1]
    all_prompts = prompts.reshape(-1, prompts.shape[-1])
    losses = []
    for rank in range(world):
        rows = slice(rank * batch, (rank + 1) * batch)
        img, txt = image[rows], prompts[rows].reshape(batch * k, -1)
        labels_img = torch.zeros(batch, world * batch * k, dtype=image.dtype)
        for b in range(batch):
            labels_img[b, (rank * batch + b) * k : (rank * batch + b + 1) * k] = 1.0 / k
        labels_txt = torch.zeros(batch * k, world * batch, dtype=image.dtype)
        for b in range(batch):
            labels_txt[b * k : (b + 1) * k, rank * batch + b] = 1.0
        loss_img = (-labels_img * F.log_softmax(scale * img @ all_prompts.t(), -1)).sum(-1).mean()
        loss_txt = (-labels_txt * F.log_softmax(scale * txt @ image.t(), -1)).sum(-1).mean()
        losses.append(0.5 * (loss_img + loss_txt))
    return torch.stack(losses).mean()


def test_multi_label_loss_matches_slow_reference():
    image, prompts = _normed(5, 8, seed=1), _normed(5, 3, 8, seed=2)
    scale = torch.tensor(7.5, dtype=torch.float64)
    expected = _slow_multi_label(image, prompts, scale)
    torch.testing.assert_close(groupvit_multi_label_loss(image, prompts, scale), expected)
    # And the official rank-wise formulation averaged over 2 simulated ranks gives the same global loss.
    torch.testing.assert_close(_official_local_rows(image[:4], prompts[:4], scale, world=2),
                               groupvit_multi_label_loss(image[:4], prompts[:4], scale))  # fmt: skip


def _slow_multi_label_group_max(groups, prompts, scale):
    """`_slow_multi_label` with the image-prompt similarity written as a loop maximum over the image's groups."""
    batch, k, _ = prompts.shape

    def sim(i, j, q):
        return max(float(groups[i, g] @ prompts[j, q]) for g in range(groups.shape[1]))

    flat = [(j, q) for j in range(batch) for q in range(k)]
    loss_image = 0.0
    for i in range(batch):
        logits = torch.tensor([scale * sim(i, j, q) for j, q in flat], dtype=torch.float64)
        own = [flat.index((i, q)) for q in range(k)]
        loss_image += -sum(logits[c] - torch.logsumexp(logits, 0) for c in own) / k
    loss_text = 0.0
    for j, q in flat:
        logits = torch.tensor([scale * sim(i, j, q) for i in range(batch)], dtype=torch.float64)
        loss_text += -(logits[j] - torch.logsumexp(logits, 0))
    return 0.5 * (loss_image / batch + loss_text / (batch * k))


def test_multi_label_loss_group_max_matches_slow_reference():
    groups, prompts = _normed(4, 5, 8, seed=11), _normed(4, 3, 8, seed=12)
    scale = torch.tensor(6.0, dtype=torch.float64)
    loss = groupvit_multi_label_loss(groups, prompts, scale)
    torch.testing.assert_close(loss, _slow_multi_label_group_max(groups, prompts, scale).to(loss))
    # One group per image is the official (pooled) loss; a duplicated group changes nothing.
    single = groups[:, 0]
    torch.testing.assert_close(groupvit_multi_label_loss(single[:, None], prompts, scale),
                               groupvit_multi_label_loss(single, prompts, scale))  # fmt: skip
    torch.testing.assert_close(groupvit_multi_label_loss(single[:, None].expand(4, 3, 8), prompts, scale),
                               groupvit_multi_label_loss(single, prompts, scale))  # fmt: skip
    # The max differs from scoring the mean of the groups.
    assert not torch.isclose(loss, groupvit_multi_label_loss(F.normalize(groups.mean(1), dim=-1), prompts, scale))
    with pytest.raises(ValueError, match="image_embeds"):
        groupvit_multi_label_loss(groups[..., None], prompts, scale)


def test_model_multi_label_pooling_max_scores_projected_groups():
    config = ClipzooGroupViTConfig(**{**get_variant("groupvit").tiny_config().to_dict(), "multi_label_pooling": "max"})
    torch.manual_seed(0)
    model = ClipzooGroupViTModel(config).eval()
    vocab = config.text_config.vocab_size
    ids = torch.randint(3, vocab, (3, 1 + config.multi_label, 8), generator=torch.Generator().manual_seed(0))
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = model(input_ids=ids, pixel_values=pixels, return_loss=True)
    groups = model.get_group_features(pixels)["group_embeds"]
    torch.testing.assert_close(out.group_embeds, F.normalize(groups, dim=-1))
    expected = groupvit_multi_label_loss(out.group_embeds, out.prompt_embeds, model.clamped_logit_scale(True))
    torch.testing.assert_close(out.multi_label_loss, expected)
    torch.testing.assert_close(out.loss, out.contrastive_loss + expected)
    # The default ("mean", the official loss) computes no group embeddings.
    default = ClipzooGroupViTModel(get_variant("groupvit").tiny_config()).eval()
    assert default(input_ids=ids, pixel_values=pixels, return_loss=True).group_embeds is None
    with pytest.raises(ValueError, match="multi_label_pooling"):
        ClipzooGroupViTConfig(multi_label_pooling="sum")
    assert ClipzooGroupViTConfig(multi_label_pooling="group").multi_label_pooling == "group"


def _slow_word_image_term(sim, batch, k, ids):
    """Image -> prompts with word targets, as loops: for image i and each own prompt q, 1/K of the target shared
    evenly by the batch's prompts with prompt q's id. `sim(i, j, q)` is the scaled image-prompt logit."""
    flat = [(j, q) for j in range(batch) for q in range(k)]
    loss = 0.0
    for i in range(batch):
        logits = torch.stack([sim(i, j, q) for j, q in flat])
        log_p = logits - torch.logsumexp(logits, dim=0)
        for q in range(k):
            matches = [c for c, (j, r) in enumerate(flat) if ids[j][r] == ids[i][q]]
            loss += -sum(log_p[c] for c in matches) / (len(matches) * k)
    return loss / batch


def _slow_multi_label_word_targets(sim, batch, k, ids):
    """Word targets written out with loops: the image term above, and for prompt (j, q) a softmax over the images
    with the target shared evenly by the images having its id."""
    loss_text = 0.0
    for j in range(batch):
        for q in range(k):
            logits = torch.stack([sim(i, j, q) for i in range(batch)])
            log_p = logits - torch.logsumexp(logits, dim=0)
            having = [i for i in range(batch) if ids[j][q] in ids[i]]
            loss_text += -sum(log_p[i] for i in having) / len(having)
    return 0.5 * (_slow_word_image_term(sim, batch, k, ids) + loss_text / (batch * k))


def test_multi_label_loss_word_targets_match_slow_reference():
    image, prompts = _normed(5, 8, seed=21), _normed(5, 3, 8, seed=22)
    scale = torch.tensor(5.0, dtype=torch.float64)
    # Shared words across images, a word twice in one image, one word in every image.
    ids = [[1, 2, 9], [1, 3, 9], [4, 4, 9], [2, 1, 9], [5, 6, 9]]
    loss = groupvit_multi_label_loss(image, prompts, scale, prompt_ids=torch.tensor(ids))
    expected = _slow_multi_label_word_targets(lambda i, j, q: scale * image[i] @ prompts[j, q], 5, 3, ids)
    torch.testing.assert_close(loss, expected)
    # All ids different: exactly the official (index) loss.
    unique = torch.arange(15).reshape(5, 3)
    torch.testing.assert_close(groupvit_multi_label_loss(image, prompts, scale, prompt_ids=unique),
                               groupvit_multi_label_loss(image, prompts, scale))  # fmt: skip
    assert not torch.isclose(loss, groupvit_multi_label_loss(image, prompts, scale))
    # With groups (multi_label_pooling="max") the targets are the same and the similarity is the best group's.
    groups = _normed(5, 4, 8, seed=23)

    def best_group(i, j, q):
        return scale * max(groups[i, g] @ prompts[j, q] for g in range(4))

    torch.testing.assert_close(groupvit_multi_label_loss(groups, prompts, scale, prompt_ids=torch.tensor(ids)),
                               _slow_multi_label_word_targets(best_group, 5, 3, ids))  # fmt: skip
    with pytest.raises(ValueError, match="prompt_ids must have shape"):
        groupvit_multi_label_loss(image, prompts, scale, prompt_ids=torch.tensor(ids)[:, :2])


def _slow_prompts_to_groups(groups, prompts, ids, scale):
    """`multi_label_pooling="group"` written out with loops: the image -> prompts term of the group-max loss, and
    for each prompt a softmax over every group of the batch with the target on the best group of each image that
    has the prompt's id (evenly shared)."""
    batch, num_groups, _ = groups.shape
    k = prompts.shape[1]
    flat = [(j, q) for j in range(batch) for q in range(k)]
    loss_image = _slow_word_image_term(
        lambda i, j, q: scale * max(groups[i, g] @ prompts[j, q] for g in range(num_groups)), batch, k, ids
    )
    loss_text = 0.0
    for j, q in flat:
        cells = [(i, g) for i in range(batch) for g in range(num_groups)]
        logits = torch.stack([scale * groups[i, g] @ prompts[j, q] for i, g in cells])
        log_p = logits - torch.logsumexp(logits, dim=0)
        having = [i for i in range(batch) if ids[j][q] in ids[i]]
        best = [max(range(num_groups), key=lambda g, i=i: float(groups[i, g] @ prompts[j, q])) for i in having]
        loss_text += -sum(log_p[cells.index((i, g))] for i, g in zip(having, best)) / len(having)
    return 0.5 * (loss_image + loss_text / (batch * k))


def test_multi_label_loss_prompts_to_groups_matches_slow_reference():
    groups, prompts = _normed(4, 3, 8, seed=31), _normed(4, 2, 8, seed=32)
    scale = torch.tensor(4.0, dtype=torch.float64)
    for ids in ([[1, 2], [3, 4], [5, 6], [7, 8]], [[1, 2], [1, 3], [4, 4], [2, 5]]):
        loss = groupvit_multi_label_loss(groups, prompts, scale, prompt_ids=torch.tensor(ids), prompts_to_groups=True)
        torch.testing.assert_close(loss, _slow_prompts_to_groups(groups, prompts, ids, scale))
    # Index targets are the all-different ids.
    torch.testing.assert_close(
        groupvit_multi_label_loss(groups, prompts, scale, prompts_to_groups=True),
        _slow_prompts_to_groups(groups, prompts, [[1, 2], [3, 4], [5, 6], [7, 8]], scale),
    )
    # One group per image: the group-max loss (own image's other groups do not exist).
    torch.testing.assert_close(groupvit_multi_label_loss(groups[:, :1], prompts, scale, prompts_to_groups=True),
                               groupvit_multi_label_loss(groups[:, :1], prompts, scale))  # fmt: skip
    assert not torch.isclose(
        groupvit_multi_label_loss(groups, prompts, scale, prompts_to_groups=True),
        groupvit_multi_label_loss(groups, prompts, scale),
    )
    with pytest.raises(ValueError, match="per-group"):
        groupvit_multi_label_loss(groups[:, 0], prompts, scale, prompts_to_groups=True)
    config = ClipzooGroupViTConfig(
        **{**get_variant("groupvit").tiny_config().to_dict(), "multi_label_pooling": "group"}
    )
    torch.manual_seed(0)
    model = ClipzooGroupViTModel(config).eval()
    ids = torch.randint(3, config.text_config.vocab_size, (3, 1 + config.multi_label, 8),
                        generator=torch.Generator().manual_seed(0))  # fmt: skip
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = model(input_ids=ids, pixel_values=pixels, return_loss=True)
    expected = groupvit_multi_label_loss(out.group_embeds, out.prompt_embeds, model.clamped_logit_scale(True),
                                         prompts_to_groups=True)  # fmt: skip
    torch.testing.assert_close(out.multi_label_loss, expected)


def test_model_word_targets_need_prompt_ids():
    config = ClipzooGroupViTConfig(
        **{**get_variant("groupvit").tiny_config().to_dict(), "multi_label": 2, "multi_label_targets": "word"}
    )
    torch.manual_seed(0)
    model = ClipzooGroupViTModel(config).eval()
    ids = torch.randint(3, config.text_config.vocab_size, (3, 3, 8), generator=torch.Generator().manual_seed(0))
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="prompt_ids"):
        model(input_ids=ids, pixel_values=pixels, return_loss=True)
    words = torch.tensor([[7, 8], [7, 9], [10, 10]])
    out = model(input_ids=ids, pixel_values=pixels, return_loss=True, prompt_ids=words)
    expected = groupvit_multi_label_loss(out.image_embeds, out.prompt_embeds, model.clamped_logit_scale(True),
                                         prompt_ids=words)  # fmt: skip
    torch.testing.assert_close(out.multi_label_loss, expected)
    # The multi-process path reads the ids from the inputs.
    plain = model(input_ids=ids, pixel_values=pixels)
    torch.testing.assert_close(model.loss_from_outputs(plain, {"prompt_ids": words}), out.loss)
    # The official default ignores ids.
    default = ClipzooGroupViTModel(ClipzooGroupViTConfig(**{**config.to_dict(), "multi_label_targets": "index"}))
    default.load_state_dict(model.state_dict())
    default.eval()
    torch.testing.assert_close(
        default(input_ids=ids, pixel_values=pixels, return_loss=True, prompt_ids=words).loss,
        default(input_ids=ids, pixel_values=pixels, return_loss=True).loss,
    )
    with pytest.raises(ValueError, match="multi_label_targets"):
        ClipzooGroupViTConfig(multi_label_targets="caption")


def _slow_group_background(groups, prompts, scale, ids, is_caption, background_id, batch_classes=False):
    """Loops: per image, each word prompt's best group takes it as target, the other groups the background.

    Classes are the image's own non-caption prompts, or with `batch_classes` every non-caption prompt of the batch,
    a target's mass then spread evenly over the prompts with its id.
    """
    per_image = []
    for b in range(groups.shape[0]):
        own = [(b, k) for k in range(prompts.shape[1]) if not is_caption[b, k]]
        background = [k for _, k in own if int(ids[b, k]) == background_id]
        words = [k for _, k in own if k not in background]
        if not background:
            continue
        classes = [(c, j) for c in range(prompts.shape[0]) for j in range(prompts.shape[1]) if not is_caption[c, j]]
        classes = classes if batch_classes else own
        best = {k: max(range(groups.shape[1]), key=lambda g: float(groups[b, g] @ prompts[b, k])) for k in words}
        terms = []
        for g in range(groups.shape[1]):
            log_probs = torch.log_softmax(torch.stack([scale * groups[b, g] @ prompts[c, j] for c, j in classes]), 0)
            target = [k for k in words if best[k] == g] or background
            loss = 0.0
            for k in target:
                if batch_classes:
                    matching = [i for i, (c, j) in enumerate(classes) if int(ids[c, j]) == int(ids[b, k])]
                else:
                    matching = [classes.index((b, k))]
                loss = loss - sum(log_probs[i] for i in matching) / len(matching) / len(target)
            terms.append(loss)
        per_image.append(sum(terms) / len(terms))
    return sum(per_image) / len(per_image)


def test_group_background_loss_batch_classes_match_slow_reference():
    groups, prompts = _normed(5, 4, 8, seed=31), _normed(5, 3, 8, seed=32)
    scale = torch.tensor(4.0, dtype=torch.float64)
    bg = 99
    ids = torch.tensor([[1, bg, 2], [bg, 1, 3], [4, 5, 6], [bg, 7, 7], [bg, bg, 1]])
    is_caption = torch.zeros(5, 3, dtype=torch.bool)
    is_caption[0, 2] = True
    loss = groupvit_group_background_loss(groups, prompts, scale, ids, is_caption, bg, classes="batch")
    expected = _slow_group_background(groups, prompts, scale, ids, is_caption, bg, batch_classes=True)
    torch.testing.assert_close(loss, expected.to(loss))
    assert not torch.isclose(loss, groupvit_group_background_loss(groups, prompts, scale, ids, is_caption, bg))
    # One image alone: every class is its own, and "batch" is "image" when no id repeats.
    one = slice(3, 4)
    distinct = torch.tensor([[bg, 7, 8]])
    torch.testing.assert_close(
        groupvit_group_background_loss(
            groups[one], prompts[one], scale, distinct, is_caption[one], bg, classes="batch"
        ),
        groupvit_group_background_loss(groups[one], prompts[one], scale, distinct, is_caption[one], bg),
    )
    with pytest.raises(ValueError, match="classes must be"):
        groupvit_group_background_loss(groups, prompts, scale, ids, is_caption, bg, classes="all")


def test_group_background_loss_matches_slow_reference():
    groups, prompts = _normed(5, 4, 8, seed=21), _normed(5, 3, 8, seed=22)
    prompts[3, 2] = prompts[3, 1]  # the same word twice: both prompts pick the same group and share its target
    scale = torch.tensor(5.0, dtype=torch.float64)
    bg = 99
    ids = torch.tensor([[1, bg, 2], [bg, 3, 3], [4, 5, 6], [bg, 7, 7], [bg, bg, 8]])
    is_caption = torch.tensor([[False, False, True], [False, False, False], [False] * 3, [False] * 3, [False] * 3])
    loss = groupvit_group_background_loss(groups, prompts, scale, ids, is_caption, bg)
    expected = _slow_group_background(groups, prompts, scale, ids, is_caption, bg)
    torch.testing.assert_close(loss, expected.to(loss))
    # Image 2 has no background prompt and is left out; without any, the loss is zero (and still differentiable).
    torch.testing.assert_close(
        groupvit_group_background_loss(groups[2:3], prompts[2:3], scale, ids[2:3], is_caption[2:3], bg),
        torch.zeros((), dtype=torch.float64),
    )
    # A caption-filled prompt is not a class: changing its embedding changes nothing.
    moved = prompts.clone()
    moved[0, 2] = -moved[0, 0]
    torch.testing.assert_close(groupvit_group_background_loss(groups, moved, scale, ids, is_caption, bg), loss)
    # ... unless it is a word prompt.
    assert not torch.isclose(
        groupvit_group_background_loss(groups, moved, scale, ids, torch.zeros_like(is_caption), bg),
        groupvit_group_background_loss(groups, prompts, scale, ids, torch.zeros_like(is_caption), bg),
    )
    with pytest.raises(ValueError, match="prompt_ids must have shape"):
        groupvit_group_background_loss(groups, prompts, scale, ids[:, :2], is_caption, bg)
    with pytest.raises(ValueError, match="group_embeds must be"):
        groupvit_group_background_loss(groups[:, 0], prompts, scale, ids, is_caption, bg)


def test_model_group_background_loss():
    tiny = get_variant("groupvit").tiny_config().to_dict()
    config = ClipzooGroupViTConfig(**{**tiny, "multi_label": 2, "group_background_loss_weight": 0.3})
    torch.manual_seed(0)
    model = ClipzooGroupViTModel(config).eval()
    ids = torch.randint(3, config.text_config.vocab_size, (3, 3, 8), generator=torch.Generator().manual_seed(0))
    ids[1, 2] = ids[1, 0]  # image 1's second prompt is its caption (the official filler)
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="group_background_loss_weight > 0 needs prompt_ids"):
        model(input_ids=ids, pixel_values=pixels, return_loss=True)
    background = prompt_key("background")
    words = torch.tensor([[7, background], [background, 5], [8, 9]])
    out = model(input_ids=ids, pixel_values=pixels, return_loss=True, prompt_ids=words)
    is_caption = torch.tensor([[False, False], [False, True], [False, False]])
    expected = groupvit_group_background_loss(
        out.group_embeds, out.prompt_embeds, model.clamped_logit_scale(True), words, is_caption, background
    )
    torch.testing.assert_close(out.group_background_loss, expected)
    # The multi-label term stays the configured (here official, pooled) one although group embeddings are computed.
    official = groupvit_multi_label_loss(out.image_embeds, out.prompt_embeds, model.clamped_logit_scale(True))
    torch.testing.assert_close(out.multi_label_loss, official)
    torch.testing.assert_close(out.loss, out.contrastive_loss + out.multi_label_loss + 0.3 * expected)
    # The multi-process path reads the ids and the texts from the inputs.
    plain = model(input_ids=ids, pixel_values=pixels)
    torch.testing.assert_close(model.loss_from_outputs(plain, {"prompt_ids": words, "input_ids": ids}), out.loss)
    # Another background word changes which prompts are the background.
    other = ClipzooGroupViTModel(ClipzooGroupViTConfig(**{**config.to_dict(), "background_word": "floor"}))
    other.load_state_dict(model.state_dict())
    other.eval()
    assert not torch.isclose(
        other(input_ids=ids, pixel_values=pixels, return_loss=True, prompt_ids=words).loss, out.loss
    )
    # group_background_classes="batch" reaches the loss.
    batch_model = ClipzooGroupViTModel(
        ClipzooGroupViTConfig(**{**config.to_dict(), "group_background_classes": "batch"})
    )
    batch_model.load_state_dict(model.state_dict())
    batch_out = batch_model.eval()(input_ids=ids, pixel_values=pixels, return_loss=True, prompt_ids=words)
    torch.testing.assert_close(
        batch_out.group_background_loss,
        groupvit_group_background_loss(
            out.group_embeds,
            out.prompt_embeds,
            model.clamped_logit_scale(True),
            words,
            is_caption,
            background,
            classes="batch",
        ),  # fmt: skip
    )
    # Weight 0 (the default) is the official loss: no group embeddings, no extra term.
    default = ClipzooGroupViTModel(get_variant("groupvit").tiny_config()).eval()
    plain_out = default(input_ids=torch.cat([ids, ids[:, :1]], 1), pixel_values=pixels, return_loss=True)
    assert plain_out.group_embeds is None and plain_out.group_background_loss is None
    for bad, match in (({"group_background_loss_weight": -1.0}, "group_background_loss_weight"),
                       ({"background_word": " "}, "background_word"),
                       ({"group_background_classes": "all"}, "group_background_classes")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            ClipzooGroupViTConfig(**bad)


def test_prompt_words_match_the_prompts():
    caption = "a red circle, a black triangle and an orange arrow"
    texts, words = build_prompt_texts(caption, 3, rng=np.random.default_rng(4), return_words=True)
    assert texts == build_prompt_texts(caption, 3, rng=np.random.default_rng(4))  # same draws
    assert [any(t.format(w) == p for t in FULL_IMAGENET_TEMPLATES) for p, w in zip(texts[1:], words)] == [True] * 3
    texts, words = build_prompt_texts("a green half-disc", 3, rng=np.random.default_rng(0), return_words=True)
    assert words == ["half-disc", "a green half-disc", "a green half-disc"]  # filled prompts name the caption
    assert prompt_key("circle") == prompt_key("circle") != prompt_key("square")


def test_multi_label_loss_is_mean_of_log_probs_not_log_of_sum():
    image, prompts = _normed(3, 4, seed=3), _normed(3, 2, 4, seed=4)
    scale = torch.tensor(5.0, dtype=torch.float64)
    logits = scale * image @ prompts.reshape(6, 4).t()
    log_probs = F.log_softmax(logits, dim=-1)
    paper_form = -torch.stack([torch.logsumexp(log_probs[i, 2 * i : 2 * i + 2], 0) for i in range(3)]).mean()
    ours_image_side = -torch.stack([log_probs[i, 2 * i : 2 * i + 2].mean() for i in range(3)]).mean()
    text_side = F.cross_entropy(scale * prompts.reshape(6, 4) @ image.t(), torch.arange(3).repeat_interleave(2))
    total = groupvit_multi_label_loss(image, prompts, scale)
    torch.testing.assert_close(total, 0.5 * (ours_image_side + text_side))
    assert not torch.isclose(total, 0.5 * (paper_form + text_side))


def test_contrastive_loss_matches_cross_entropy():
    image, text = _normed(4, 6, seed=5), _normed(4, 6, seed=6)
    logits = 10.0 * image @ text.t()
    expected = 0.5 * (F.cross_entropy(logits, torch.arange(4)) + F.cross_entropy(logits.t(), torch.arange(4)))
    torch.testing.assert_close(groupvit_contrastive_loss(image, text, torch.tensor(10.0)), expected)


def test_templates_are_the_clip_imagenet_sets():
    assert len(FULL_IMAGENET_TEMPLATES) == 80 == len(set(FULL_IMAGENET_TEMPLATES))
    assert all(t.count("{}") == 1 for t in FULL_IMAGENET_TEMPLATES)
    assert (
        FULL_IMAGENET_TEMPLATES[0] == "a bad photo of a {}." and FULL_IMAGENET_TEMPLATES[-1] == "a tattoo of the {}."
    )
    assert len(SUBSET_IMAGENET_TEMPLATES) == 7 and set(SUBSET_IMAGENET_TEMPLATES) <= set(FULL_IMAGENET_TEMPLATES)


@pytest.mark.parametrize(
    "caption, words",
    [
        ("a red circle, two yellow circles and a purple arrow", ["circle", "circles", "arrow"]),
        ("a green half-disc", ["half-disc"]),
        ("a small triangle pointing up is next to the big square", ["triangle", "pointing", "is", "square"]),
        ("A dog runs on the beach", ["dog", "runs", "beach"]),
        ("two of them", []),
        ("a red cross on a beige background", ["cross", "background"]),  # every colour word is an adjective
    ],
)
def test_lexicon_extractor_keeps_nouns_and_verbs(caption, words):
    assert LexiconWordExtractor()(caption) == words


def test_prompt_expansion_follows_the_official_sampling():
    caption = "a red circle, a black triangle and an orange arrow"
    texts = build_prompt_texts(caption, num_prompts=3, rng=np.random.default_rng(0))
    assert len(texts) == 4 and texts[0] == caption
    used = []
    for prompt in texts[1:]:
        hits = [
            (t, w) for t in FULL_IMAGENET_TEMPLATES for w in ("circle", "triangle", "arrow") if t.format(w) == prompt
        ]
        assert hits, prompt
        used.append(hits[0][1])
    assert sorted(used) == ["arrow", "circle", "triangle"]  # without replacement
    # Fewer words than K: the remaining slots are the raw caption.
    assert build_prompt_texts("a green half-disc", 3, rng=np.random.default_rng(0))[2:] == ["a green half-disc"] * 2
    # Randomness: different draws give different templates/words over many calls.
    draws = {tuple(build_prompt_texts(caption, 2, rng=np.random.default_rng(s))) for s in range(20)}
    assert len(draws) > 5


def test_prompt_expansion_bad_captions():
    assert build_prompt_texts("two of them", 2) == ["two of them"] * 3  # official: fill with the caption
    with pytest.raises(ValueError, match="no nouns or verbs"):
        build_prompt_texts("two of them", 2, no_word_policy="error")
    with pytest.raises(ValueError, match="non-empty string"):
        build_prompt_texts("   ", 2)
    with pytest.raises(ValueError, match="no_word_policy"):
        build_prompt_texts("a dog", 2, no_word_policy="skip")


def test_custom_word_extractor_is_used():
    texts = build_prompt_texts("anything", 2, word_extractor=lambda text: ["zebra"], templates=("x {} y",))
    assert texts == ["anything", "x zebra y", "anything"]


# ------------------------------------------------------------------------------------------- two processes


def _model_and_batch(targets="index", group_background=0.0):
    torch.manual_seed(0)
    config = get_variant("groupvit").tiny_config()
    overrides = {"multi_label": 2, "multi_label_targets": targets, "group_background_loss_weight": group_background}
    model = ClipzooGroupViTModel(ClipzooGroupViTConfig(**{**config.to_dict(), **overrides})).double().eval()
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, 64, (4, 3, 8), generator=generator)
    input_ids[..., -1] = config.text_config.eos_token_id
    return model, input_ids, torch.randn(4, 3, 32, 32, generator=generator, dtype=torch.float64)


def _two_processes_equal_one():
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator()
    assert get_world_size() == 2
    _check_two_processes(accelerator, "index", None)
    # Word targets (clipzoo extension): a word shared by images on different ranks, gathered like the embeddings.
    _check_two_processes(accelerator, "word", torch.tensor([[1, 2], [3, 1], [1, 4], [5, 5]]))
    # The per-group background loss (clipzoo extension), one image without a background prompt.
    background = prompt_key("background")
    ids = torch.tensor([[1, background], [background, 2], [3, 4], [background, background]])
    _check_two_processes(accelerator, "index", ids, group_background=0.5)


def _check_two_processes(accelerator, targets, prompt_ids, group_background=0.0):
    model, input_ids, pixels = _model_and_batch(targets, group_background)
    inputs = {"input_ids": input_ids, **({} if prompt_ids is None else {"prompt_ids": prompt_ids})}
    # eval(): BatchNorm uses running statistics and the grouping is deterministic, so the two runs are comparable.
    ref_loss = model.loss_from_outputs(model(input_ids=input_ids, pixel_values=pixels), inputs)  # no gathering
    ref_loss.backward()
    ref_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    ref_loss = ref_loss.detach()

    model, input_ids, pixels = _model_and_batch(targets, group_background)
    ddp = accelerator.prepare(model)
    rows = slice(2 * get_rank(), 2 * get_rank() + 2)
    outputs = ddp(input_ids=input_ids[rows], pixel_values=pixels[rows])
    local = {"input_ids": input_ids[rows], **({} if prompt_ids is None else {"prompt_ids": prompt_ids[rows]})}
    loss = model.loss_from_outputs(outputs, local, gather=gather_features)
    accelerator.backward(loss)
    torch.testing.assert_close(loss.detach(), ref_loss, atol=1e-8, rtol=0)
    assert outputs.multi_label_loss is not None
    assert (outputs.group_background_loss is not None) == (group_background > 0)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, ref_grads[name], atol=1e-8, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


def test_total_loss_two_processes_equals_single_process():
    # A fresh interpreter forks the 2 ranks: forking this pytest process after it ran torch ops deadlocks the
    # children in the inherited OpenMP pool (first conv of the forward).
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_groupvit_loss as t; "
        "from accelerate import debug_launcher; debug_launcher(t._two_processes_equal_one, num_processes=2)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
