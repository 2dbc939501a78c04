"""ClipzooTrainer under 2 real processes: loss and every gradient equal one process on the global batch."""

import torch
from transformers import CLIPConfig, CLIPModel, TrainingArguments


GLOBAL_BATCH = 8


def _model():
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "vocab_size": 40,
            "max_position_embeddings": 8,
            "eos_token_id": 1,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 16,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    return CLIPModel(config).double()  # float64: the comparison is of summation order, not of rounding


def _batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 40, (GLOBAL_BATCH, 8), generator=g)
    ids[:, -1] = 1
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "pixel_values": torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=g, dtype=torch.float64),
        "return_loss": True,
    }


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def _two_process_check():
    import tempfile

    from clipzoo.modeling.losses import get_rank, get_world_size
    from clipzoo.training.trainer import ClipzooTrainer

    rank, world = get_rank(), get_world_size()
    assert world == 2, world
    reference = _model()
    full = _batch()
    loss_ref = reference(**full).loss
    loss_ref.backward()
    grads_ref = _grads(reference)

    args = TrainingArguments(tempfile.mkdtemp(), use_cpu=True, report_to="none", remove_unused_columns=False)
    trainer = ClipzooTrainer(model=_model(), args=args)
    model = trainer.accelerator.prepare_model(trainer.model)
    model.train()
    local = {k: (v[rank * 4 : (rank + 1) * 4] if torch.is_tensor(v) else v) for k, v in full.items()}
    loss = trainer.compute_loss(model, local)
    trainer.accelerator.backward(loss)
    torch.testing.assert_close(loss.detach(), loss_ref.detach(), rtol=0, atol=1e-12)
    grads = _grads(trainer.accelerator.unwrap_model(model))
    assert grads.keys() == grads_ref.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, grads_ref[name], rtol=1e-9, atol=1e-10, msg=name)
    assert "logit_scale" in grads


def test_clipzoo_trainer_two_processes_match_one(tmp_path):
    from distributed_utils import run_scenarios

    assert run_scenarios(__file__, tmp_path / "results.json") == {"trainer_clip_model": ""}


if __name__ == "__main__":
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from distributed_utils import main_for

    main_for({"trainer_clip_model": _two_process_check})
