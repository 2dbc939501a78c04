"""The losses under 2 real processes (gloo, forked by accelerate.debug_launcher) equal the single-process run.

Each rank takes half of a global batch of 8, computes the loss with gathered features and backpropagates through a
DDP-wrapped model (`Accelerator().prepare`); the loss and every parameter gradient (logit_scale and logit_bias
included) must equal those of the same model run without DDP on the full batch. The workers are module-level
functions because the launcher forks them; an assertion failing in a rank is raised by the launcher as
`torch.multiprocessing.ProcessRaisedException`. All launches run in one fresh interpreter (see `results`).
"""

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from accelerate import Accelerator, debug_launcher
from accelerate.state import AcceleratorState, DistributedType
from torch import nn

from clipzoo.modeling.losses import (
    clip_loss,
    gather_features,
    get_rank,
    get_world_size,
    multi_positive_contrastive_loss,
    sigmoid_clip_loss,
)


GLOBAL_BATCH, NUM_PROCESSES = 8, 2
ATOL = 1e-6
TIMEOUT_S = 240


class _TinyDualEncoder(nn.Module):
    def __init__(self, with_bias: bool):
        super().__init__()
        torch.manual_seed(0)
        self.image_encoder = nn.Linear(6, 4)
        self.text_encoder = nn.Linear(5, 4)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.logit_bias = nn.Parameter(torch.tensor(-2.0)) if with_bias else None
        self.double()

    def forward(self, pixels, tokens):
        image = F.normalize(self.image_encoder(pixels), dim=-1)
        text = F.normalize(self.text_encoder(tokens), dim=-1)
        return image, text, self.log_logit_scale.exp(), self.logit_bias


def _global_batch():
    g = torch.Generator().manual_seed(1)
    pixels = torch.randn(GLOBAL_BATCH, 6, generator=g, dtype=torch.float64)
    tokens = torch.randn(GLOBAL_BATCH, 5, generator=g, dtype=torch.float64)
    label_ids = torch.tensor([0, 1, 0, 2, 1, 3, 3, 0])  # repeated ids: multi-positive pairs across ranks
    return pixels, tokens, label_ids


def _clip(image, text, scale, bias, label_ids, gather):
    return clip_loss(image, text, scale, gather=gather)


def _sigmoid(image, text, scale, bias, label_ids, gather):
    # The mask must cover the global batch: gather the ids, then compare (gathered rows are in rank order).
    ids = gather_features(label_ids) if gather else label_ids
    return sigmoid_clip_loss(image, text, scale, bias, positive_mask=ids[:, None] == ids[None, :], gather=gather)


def _multi_positive(image, text, scale, bias, label_ids, gather):
    if gather:
        image, text, label_ids = gather_features(image), gather_features(text), gather_features(label_ids)
    logits, mask = scale * image @ text.t(), label_ids[:, None] == label_ids[None, :]
    return (multi_positive_contrastive_loss(logits, mask) + multi_positive_contrastive_loss(logits.t(), mask.t())) / 2


LOSSES = {"clip": (_clip, False), "sigmoid": (_sigmoid, True), "multi_positive": (_multi_positive, False)}


def _reference(loss_name):
    """Loss and gradients of the model on the full batch, one process, no gathering."""
    loss_fn, with_bias = LOSSES[loss_name]
    model = _TinyDualEncoder(with_bias)
    pixels, tokens, label_ids = _global_batch()
    loss = loss_fn(*model(pixels, tokens), label_ids, gather=False)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def _local_rows(*tensors):
    rows = GLOBAL_BATCH // get_world_size()
    return [t[get_rank() * rows : (get_rank() + 1) * rows] for t in tensors]


def _ddp_matches_single_process(loss_name):
    AcceleratorState._reset_state(reset_partial_state=True)  # don't inherit a state created in the parent
    accelerator = Accelerator()
    assert accelerator.distributed_type == DistributedType.MULTI_CPU, accelerator.distributed_type
    assert get_world_size() == NUM_PROCESSES == accelerator.num_processes

    ref_loss, ref_grads = _reference(loss_name)  # before prepare: no collective runs here

    loss_fn, with_bias = LOSSES[loss_name]
    model = _TinyDualEncoder(with_bias)
    ddp_model = accelerator.prepare(model)
    assert isinstance(ddp_model, nn.parallel.DistributedDataParallel)
    pixels, tokens, label_ids = _local_rows(*_global_batch())
    loss = loss_fn(*ddp_model(pixels, tokens), label_ids, gather=True)
    accelerator.backward(loss)  # plain backward: no * world_size, no logit_scale trick

    torch.testing.assert_close(loss.detach(), ref_loss, atol=ATOL, rtol=0)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, ref_grads[name], atol=ATOL, rtol=0, msg=lambda m, n=name: f"{n}: {m}")


def _keep_local_grad_gather(x):
    parts = [torch.empty_like(x) for _ in range(get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[get_rank()] = x
    return torch.cat(parts)


def _keep_local_grad_gather_is_not_exact():
    """The open_clip-style gather (no grad through other ranks' slots) with plain averaging: encoder grads come out
    1/world_size of the truth while logit_scale's is right, so no single loss factor fixes both."""
    ref_loss, ref_grads = _reference("clip")
    model = _TinyDualEncoder(with_bias=False)
    pixels, tokens, _ = _local_rows(*_global_batch())
    image, text, scale, _ = model(pixels, tokens)
    loss = clip_loss(_keep_local_grad_gather(image), _keep_local_grad_gather(text), scale, gather=False)
    loss.backward()
    for param in model.parameters():  # what DDP does
        dist.all_reduce(param.grad)
        param.grad /= get_world_size()

    torch.testing.assert_close(loss.detach(), ref_loss, atol=ATOL, rtol=0)
    ws = get_world_size()
    torch.testing.assert_close(
        model.image_encoder.weight.grad * ws, ref_grads["image_encoder.weight"], atol=ATOL, rtol=0
    )
    torch.testing.assert_close(model.log_logit_scale.grad, ref_grads["log_logit_scale"], atol=ATOL, rtol=0)
    assert not torch.allclose(model.image_encoder.weight.grad, ref_grads["image_encoder.weight"], atol=1e-3)


def _rank_one_fails():
    assert get_rank() == 0, "rank 1 fails on purpose"


SCENARIOS = {
    "clip": (_ddp_matches_single_process, ("clip",)),
    "sigmoid": (_ddp_matches_single_process, ("sigmoid",)),
    "multi_positive": (_ddp_matches_single_process, ("multi_positive",)),
    "keep_local_grad": (_keep_local_grad_gather_is_not_exact, ()),
    "rank_one_fails": (_rank_one_fails, ()),
}


def _run_scenarios(names: list[str]) -> dict[str, str]:
    """Runs each scenario with debug_launcher; maps its name to "" on success, else to the error raised."""
    results = {}
    for name in names:
        function, args = SCENARIOS[name]
        try:
            debug_launcher(function, args=args, num_processes=NUM_PROCESSES)
            results[name] = ""
        except Exception as err:  # ProcessRaisedException carries the rank's traceback
            results[name] = f"{type(err).__name__}: {err}"
    return results


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[str, str]:
    # debug_launcher forks, and a child forked after the parent has used torch's OpenMP pool hangs in its first
    # parallel op (measured: cross_entropy never returns). Earlier tests in this pytest process may have used it, so
    # the launches run in a fresh interpreter that does no torch compute itself.
    out = tmp_path_factory.mktemp("distributed") / "results.json"
    proc = subprocess.Popen(
        [sys.executable, __file__, str(out), *SCENARIOS],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # one process group with the forked ranks, killed together on timeout
    )
    try:
        log, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"distributed scenarios did not finish in {TIMEOUT_S} s:\n{log[-4000:]}")
    assert proc.returncode == 0 and out.exists(), log[-4000:]
    return json.loads(out.read_text())


def test_clip_loss_two_processes_equals_single_process(results):
    assert results["clip"] == ""


def test_sigmoid_loss_with_global_mask_two_processes_equals_single_process(results):
    assert results["sigmoid"] == ""


def test_multi_positive_loss_two_processes_equals_single_process(results):
    assert results["multi_positive"] == ""


def test_keep_local_grad_gather_needs_rescaling(results):
    assert results["keep_local_grad"] == ""


def test_failure_in_one_rank_is_reported(results):
    assert "rank 1 fails on purpose" in results["rank_one_fails"]


if __name__ == "__main__":
    Path(sys.argv[1]).write_text(json.dumps(_run_scenarios(sys.argv[2:])))
