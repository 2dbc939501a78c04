"""CLIP-FSAR under 2 real processes: each rank trains on its own episode, and DDP's averaged gradients are exact.

Episodes are independent, so `loss_from_outputs` gathers nothing: rank r reports the loss of its own episode, and
DDP's gradient average over the ranks equals the gradient of one process computing the mean loss of both episodes.
Each rank runs `ClipzooTrainer.compute_loss` on a DDP-wrapped tiny model (the path the trainer takes under several
processes: `forward(return_loss=False)` then `model.loss_from_outputs`), backpropagates, and compares the loss with
its local episode's and every trainable parameter's gradient (the video-text `scale` included) with the one-process
reference it computes itself on both episodes. A second scenario swaps in a loss that gathers the episodes across
ranks, as a contrastive loss would, and must be caught: with `gather_features` (sum-of-gradients backward) such a
loss still yields the exact averaged gradients, so it is the per-rank loss value that exposes it. The scenarios run in
a fresh interpreter (`tests/distributed_utils.py`).
"""

import torch
from transformers import TrainingArguments


ATOL = RTOL = 1e-5  # gradients: relative to each parameter's largest gradient entry
DISTINCT = ("scale", "temporal_transformer.layers.0.attention.to_q.weight", "vision_model.visual_projection.weight")


def _model():
    from clipzoo.modeling.modeling_clip_fsar import ClipzooCLIPFSARModel
    from clipzoo.variants import get_variant

    config = get_variant("clip_fsar").tiny_config()
    config.attention_dropout = config.ffn_dropout = 0.0  # training mode, but a deterministic forward
    torch.manual_seed(0)  # the same initial model on every rank
    model = ClipzooCLIPFSARModel(config)
    model.class_text_embeds.normal_()  # the tiny model's table is zeros: give the video-text loss real targets
    return model.train()


def _episodes():
    """Two different 2-way 1-shot episodes (different videos, classes and query labels), one per rank."""
    from clipzoo.variants import get_variant

    row = get_variant("clip_fsar")
    first = row.tiny_inputs(row.tiny_config(), 0)
    second = {
        **row.tiny_inputs(row.tiny_config(), 1),
        "support_class_ids": torch.tensor([1, 2]),
        "labels": torch.tensor([1, 0, 0, 1]),
        "query_class_ids": torch.tensor([2, 1, 1, 2]),
    }
    return [first, second]


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _reference():
    """One process, no DDP: the per-episode losses (the model's own `return_loss`) and the gradients of their mean,
    plus each episode's own gradients (to show the episodes disagree)."""
    model = _model()
    episode_losses, episode_grads = [], []
    for episode in _episodes():
        model.zero_grad()
        loss = model(**episode).loss
        loss.backward()
        episode_losses.append(loss.detach())
        episode_grads.append(_grads(model))
    model.zero_grad()
    mean = torch.stack([model(**episode).loss for episode in _episodes()]).mean()
    mean.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return episode_losses, episode_grads, _grads(model), trainable


def _trainer_step():
    """This rank's loss and gradients through `ClipzooTrainer.compute_loss` on a DDP-wrapped model."""
    import tempfile

    from clipzoo.modeling.losses import get_rank
    from clipzoo.training.trainer import ClipzooTrainer

    args = TrainingArguments(tempfile.mkdtemp(), use_cpu=True, report_to="none", remove_unused_columns=False)
    trainer = ClipzooTrainer(model=_model(), args=args)
    model = trainer.accelerator.prepare_model(trainer.model)
    assert isinstance(model, torch.nn.parallel.DistributedDataParallel), type(model)
    model.train()
    loss, outputs = trainer.compute_loss(model, _episodes()[get_rank()], return_outputs=True)
    assert outputs.loss is None  # the multi-process branch: forward without a loss, then loss_from_outputs
    trainer.accelerator.backward(loss)
    return loss.detach(), _grads(trainer.accelerator.unwrap_model(model))


def _far(a, b):
    return bool((a - b).norm() > 0.1 * max(a.norm(), b.norm()))


def _check_rank(loss, grads, reference):
    from clipzoo.modeling.losses import get_rank

    episode_losses, episode_grads, mean_grads, trainable = reference
    rank = get_rank()
    torch.testing.assert_close(
        loss, episode_losses[rank], atol=ATOL, rtol=RTOL, msg=lambda m: f"rank {rank} loss vs its own episode: {m}"
    )
    assert grads.keys() == mean_grads.keys() == trainable, sorted(grads.keys() ^ trainable)
    assert "scale" in grads and not any(n.startswith("text_model.") for n in grads)
    for name, grad in grads.items():
        ref = mean_grads[name]  # the head's gradients are ~1e-5..1e-3 at init: the tolerance follows each scale
        atol = ATOL * float(ref.abs().max()) + 1e-10
        torch.testing.assert_close(grad, ref, atol=atol, rtol=RTOL, msg=lambda m, n=name: f"rank {rank} grad {n}: {m}")

    # The comparison can tell: the two episodes' own gradients differ from each other and from their mean.
    for name in DISTINCT:
        own, other = episode_grads[rank][name], episode_grads[1 - rank][name]
        assert _far(own, other) and _far(grads[name], own), name


def _two_processes_match_one():
    from clipzoo.modeling.losses import get_world_size

    assert get_world_size() == 2, get_world_size()
    reference = _reference()  # before DDP: no collective runs here
    loss, grads = _trainer_step()
    _check_rank(loss, grads, reference)


def _gathering_loss(self, outputs, inputs, gather=None):
    """What the model must NOT do: gather every rank's queries and score them as one batch (a contrastive habit)."""
    from torch.nn import functional as F

    logits, labels = gather(outputs.logits_per_video), gather(inputs["labels"])
    targets = gather(torch.cat([inputs["support_class_ids"], inputs["query_class_ids"]]))
    video_text = F.cross_entropy(gather(outputs.video_text_logits).float(), targets)
    return F.cross_entropy(logits.float(), labels) + self.config.video_text_loss_weight * video_text


def _gathering_loss_is_caught():
    from clipzoo.modeling.modeling_clip_fsar import ClipzooCLIPFSARModel

    reference = _reference()
    ClipzooCLIPFSARModel.loss_from_outputs = _gathering_loss  # in this forked rank only
    loss, grads = _trainer_step()
    try:
        _check_rank(loss, grads, reference)
    except AssertionError as err:
        assert "loss vs its own episode" in str(err), err
    else:
        raise AssertionError("a loss gathered across ranks passed the check")


SCENARIOS = {"clip_fsar_ddp": _two_processes_match_one, "gathering_loss_caught": _gathering_loss_is_caught}


def test_clip_fsar_two_processes_average_episode_gradients(tmp_path):
    from distributed_utils import run_scenarios

    assert run_scenarios(__file__, tmp_path / "results.json") == dict.fromkeys(SCENARIOS, "")


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from distributed_utils import main_for

    main_for(SCENARIOS)
