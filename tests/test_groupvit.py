"""ClipzooGroupViTModel: parity with transformers' GroupViTModel and the official additions."""

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import GroupViTConfig, GroupViTModel

from clipzoo.configuration.configuration_groupvit import ClipzooGroupViTConfig
from clipzoo.modeling.modeling_groupvit import (
    ClipzooGroupViTModel,
    drop_path,
    groupvit_contrastive_loss,
    groupvit_multi_label_loss,
)
from clipzoo.variants import get_variant


def _tiny_config(**kwargs) -> ClipzooGroupViTConfig:
    config = get_variant("groupvit").tiny_config()
    return ClipzooGroupViTConfig(**{**config.to_dict(), **kwargs})


def _inputs(config, batch=3, seed=0, num_texts=None, size=32):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, 10) if num_texts is None else (batch, num_texts, 10)
    input_ids = torch.randint(3, config.text_config.vocab_size, shape, generator=generator)
    input_ids[..., 0] = config.text_config.bos_token_id
    input_ids[..., 7] = config.text_config.eos_token_id
    input_ids[..., 8:] = config.text_config.pad_token_id
    return input_ids, torch.randn(batch, 3, size, size, generator=generator)


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    config = _tiny_config()
    reference = GroupViTModel(
        GroupViTConfig(
            text_config=config.text_config.to_dict(),
            vision_config=config.vision_config.to_dict(),
            projection_dim=config.projection_dim,
            projection_intermediate_dim=config.projection_intermediate_dim,
        )
    ).eval()
    # Non-trivial BatchNorm statistics so the eval-mode heads are exercised.
    for head in (reference.visual_projection[1], reference.text_projection[1]):
        head.running_mean.normal_()
        head.running_var.uniform_(0.5, 2.0)
    ours = ClipzooGroupViTModel(config).eval()
    result = ours.load_state_dict(reference.state_dict(), strict=False)
    assert result.missing_keys == ["multi_label_logit_scale"] and result.unexpected_keys == []
    return reference, ours


def test_parity_with_transformers_groupvit(pair):
    reference, ours = pair
    input_ids, pixel_values = _inputs(ours.config)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
        actual = ours(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
    for name in ("image_embeds", "text_embeds", "logits_per_image", "logits_per_text"):
        torch.testing.assert_close(getattr(actual, name), getattr(expected, name), atol=1e-5, rtol=0)
    # Single process and exp(scale) < 100: the image-caption loss is transformers' CLIP loss.
    torch.testing.assert_close(actual.contrastive_loss, expected.loss, atol=1e-5, rtol=0)
    assert actual.multi_label_loss is None and actual.loss is actual.contrastive_loss


def test_loads_transformers_checkpoint_folder(pair, tmp_path):
    reference, _ = pair
    reference.save_pretrained(tmp_path)
    model = ClipzooGroupViTModel.from_pretrained(tmp_path).eval()
    assert model.config.model_type == "clipzoo_groupvit"
    input_ids, pixel_values = _inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=input_ids, pixel_values=pixel_values).logits_per_image,
            reference(input_ids=input_ids, pixel_values=pixel_values).logits_per_image,
            atol=1e-5,
            rtol=0,
        )


def test_any_resolution_interpolates_position_table(pair):
    reference, ours = pair
    _, pixel_values = _inputs(ours.config, batch=1, size=64)
    with pytest.raises(ValueError, match="doesn't match model"):
        reference.vision_model(pixel_values)  # transformers cannot run another size
    embeddings = ours.vision_model.embeddings
    patches = embeddings.layernorm(embeddings.patch_embeddings(pixel_values, interpolate_pos_encoding=True))
    table = embeddings.position_embeddings.reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    expected = patches + F.interpolate(table, size=(8, 8), mode="bicubic", align_corners=False).flatten(2).transpose(
        1, 2
    )
    torch.testing.assert_close(embeddings(pixel_values, interpolate_pos_encoding=True), expected)
    with torch.no_grad():
        out = ours.vision_model(torch.randn(1, 3, 448, 448))
        wide = ours.vision_model(torch.randn(1, 3, 40, 72))
    assert out.pooler_output.shape == (1, 32) and wide.last_hidden_state.shape == (1, 4, 32)


def test_448_input_through_full_model(pair):
    _, ours = pair
    input_ids, _ = _inputs(ours.config, batch=2)
    with torch.no_grad():
        out = ours(input_ids=input_ids, pixel_values=torch.randn(2, 3, 448, 448))
    assert out.logits_per_image.shape == (2, 2) and torch.isfinite(out.logits_per_image).all()


def test_drop_path_rates_and_behaviour():
    model = ClipzooGroupViTModel(_tiny_config(drop_path_rate=0.3))
    rates = [layer.drop_prob for stage in model.vision_model.encoder.stages for layer in stage.layers]
    assert rates == pytest.approx(torch.linspace(0, 0.3, 3).tolist())
    assert all(not hasattr(stage.downsample, "drop_prob") for stage in model.vision_model.encoder.stages)
    x = torch.ones(4000, 2, 3)
    torch.manual_seed(0)
    dropped = drop_path(x, 0.25, training=True)
    per_sample = dropped[:, 0, 0]
    assert (
        torch.isclose(per_sample, torch.tensor(0.0))
        .logical_or(torch.isclose(per_sample, torch.tensor(1 / 0.75)))
        .all()
    )
    assert (per_sample == 0).float().mean().item() == pytest.approx(0.25, abs=0.03)
    assert (dropped == per_sample[:, None, None]).all()  # one draw per sample
    assert drop_path(x, 0.25, training=False) is x


def test_logit_scales_clamped_and_separate():
    model = ClipzooGroupViTModel(_tiny_config()).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
        model.multi_label_logit_scale.fill_(math.log(3.0))
    input_ids, pixel_values = _inputs(model.config, num_texts=3)
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True)
    torch.testing.assert_close(out.logits_per_image, 100.0 * out.image_embeds @ out.text_embeds.t())
    expected_ml = groupvit_multi_label_loss(out.image_embeds, out.prompt_embeds, torch.tensor(3.0))
    torch.testing.assert_close(out.multi_label_loss, expected_ml)
    expected_itc = groupvit_contrastive_loss(out.image_embeds, out.text_embeds, torch.tensor(100.0))
    torch.testing.assert_close(out.loss, expected_itc + expected_ml)
    shared = ClipzooGroupViTModel(_tiny_config(share_temperature=True))
    assert shared.multi_label_logit_scale is None
    assert ClipzooGroupViTModel(_tiny_config(multi_label=0)).multi_label_logit_scale is None


def test_caption_plus_prompts_encoded_as_one_batch(pair):
    _, ours = pair
    input_ids, pixel_values = _inputs(ours.config, num_texts=3)
    with torch.no_grad():
        grouped = ours(input_ids=input_ids, pixel_values=pixel_values)
        flat = F.normalize(ours.get_text_features(input_ids.reshape(-1, 10)), dim=-1).reshape(3, 3, -1)
    torch.testing.assert_close(grouped.text_embeds, flat[:, 0])
    torch.testing.assert_close(grouped.prompt_embeds, flat[:, 1:])


def test_training_step_reaches_every_parameter():
    model = ClipzooGroupViTModel(_tiny_config()).train()
    input_ids, pixel_values = _inputs(model.config, batch=4, num_texts=3)
    model(input_ids=input_ids, pixel_values=pixel_values, return_loss=True).loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


def test_official_initialisation():
    model = ClipzooGroupViTModel(_tiny_config())
    stages = model.vision_model.encoder.stages
    assert stages[0].group_token.abs().sum() > 0 and stages[1].group_token.abs().sum() == 0
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07), abs=1e-4)
    assert model.vision_model.encoder.stages[0].layers[0].mlp.fc1.bias.abs().sum() == 0
    std = model.vision_model.encoder.stages[0].layers[0].mlp.fc1.weight.std().item()
    assert 0.01 < std < 0.03


def test_bad_inputs():
    model = ClipzooGroupViTModel(_tiny_config(multi_label=0)).eval()
    input_ids, _ = _inputs(model.config, batch=2)
    with pytest.raises(ValueError, match="smaller than the patch size"):
        model(input_ids=input_ids, pixel_values=torch.randn(2, 3, 4, 40))
    with pytest.raises(ValueError, match="multi_label=0"):
        model(input_ids=input_ids[:, None].expand(2, 3, 10), pixel_values=torch.randn(2, 3, 32, 32), return_loss=True)
    with pytest.raises(ValueError, match="pixel_values must have shape"):
        model(input_ids=input_ids, pixel_values=torch.randn(2, 32, 32))
    with pytest.raises(ValueError, match="drop_path_rate"):
        _tiny_config(drop_path_rate=1.5)


def _slow_local_mask(rows, cols, radius, groups):
    allowed = torch.ones(rows * cols + groups, rows * cols + groups, dtype=torch.bool)
    for i in range(rows * cols):
        for j in range(rows * cols + groups):
            if j >= rows * cols:
                allowed[i, j] = False
            else:
                allowed[i, j] = max(abs(i // cols - j // cols), abs(i % cols - j % cols)) <= radius
    return allowed


def test_local_attention_mask_matches_reference_and_scales_with_input():
    config = _tiny_config(local_attention_radius=1)
    vision = ClipzooGroupViTModel(config).vision_model
    patch = config.vision_config.patch_size
    native = config.vision_config.image_size // patch
    groups = config.vision_config.num_group_tokens[0]
    for height, width, radius in [(native * patch, native * patch, 1), (2 * native * patch, 3 * native * patch, 2)]:
        mask = vision.local_attention_mask(height, width)
        expected = _slow_local_mask(height // patch, width // patch, radius, groups)
        assert mask.shape == (1, 1, *expected.shape)
        assert torch.equal(mask[0, 0] == 0, expected)


def test_local_attention_keeps_first_stage_patches_local():
    torch.manual_seed(0)
    outputs = {}
    for radius in (None, 1):
        model = ClipzooGroupViTModel(_tiny_config(local_attention_radius=radius)).eval()
        stage = model.vision_model.encoder.stages[0]
        captured = []
        hook = stage.layers[-1].register_forward_hook(lambda module, args, out, store=captured: store.append(out))
        size = model.config.vision_config.image_size
        pixels = torch.randn(1, 3, size, size)
        shifted = pixels.clone()
        shifted[:, :, :2, :2] += 3.0  # inside the top-left patch only
        with torch.no_grad():
            model.vision_model(pixels)
            model.vision_model(shifted)
        hook.remove()
        patch = model.config.vision_config.patch_size
        cols = size // patch
        changed = (captured[0] - captured[1]).abs().amax(-1)[0] > 1e-6
        outputs[radius] = (changed[: cols * cols].reshape(cols, cols), changed[cols * cols :], len(stage.layers))
    everywhere, _, _ = outputs[None]
    assert everywhere.all()
    local, group_tokens, depth = outputs[1]
    reach = 1 * depth
    rows, cols = torch.meshgrid(torch.arange(local.shape[0]), torch.arange(local.shape[1]), indexing="ij")
    assert torch.equal(local, torch.maximum(rows, cols) <= reach)
    assert group_tokens.all()  # group tokens still see every patch


def _deep_first_stage(**kwargs) -> ClipzooGroupViTConfig:
    """The tiny config with 3 layers in the first stage and a 64-px input (an 8 x 8 patch grid)."""
    vision = {**_tiny_config().vision_config.to_dict(), "depths": [3, 1, 1], "image_size": 64}
    return _tiny_config(vision_config=vision, **kwargs)


def _first_stage_reach(radius):
    """Which first-stage patch outputs change when only the top-left patch's pixels change."""
    torch.manual_seed(0)
    model = ClipzooGroupViTModel(_deep_first_stage(local_attention_radius=radius)).eval()
    stage = model.vision_model.encoder.stages[0]
    captured = []
    hook = stage.layers[-1].register_forward_hook(lambda module, args, out: captured.append(out))
    size = model.config.vision_config.image_size
    pixels = torch.randn(1, 3, size, size)
    shifted = pixels.clone()
    shifted[:, :, :2, :2] += 3.0
    with torch.no_grad():
        model.vision_model(pixels)
        model.vision_model(shifted)
    hook.remove()
    cols = size // model.config.vision_config.patch_size
    # Masked positions get exactly zero attention, so outside the reach the outputs are bit-identical.
    return (captured[0] - captured[1]).abs().amax(-1)[0, : cols * cols].reshape(cols, cols) > 0


def test_local_attention_radius_per_layer():
    depth = 3
    rows, cols = torch.meshgrid(torch.arange(8), torch.arange(8), indexing="ij")
    chebyshev = torch.maximum(rows, cols)
    # One radius per layer: the receptive field grows by that layer's radius only.
    for radii in ([1, 0, 0], [0, 0, 0], [1, 1, 1], [0, 2, 0]):
        reach = _first_stage_reach(radii)
        size = reach.shape[0]
        assert torch.equal(reach, chebyshev[:size, :size] <= sum(radii)), radii
    # A list of equal radii is the integer radius.
    assert torch.equal(_first_stage_reach([1] * depth), _first_stage_reach(1))
    with pytest.raises(ValueError, match="one radius per first-stage layer"):
        _deep_first_stage(local_attention_radius=[1, 0])
    for bad in ([1, -1, 0], [1, 0.5, 0], []):
        with pytest.raises(ValueError, match="local_attention_radius"):
            _deep_first_stage(local_attention_radius=bad)


def test_local_attention_radius_round_trip_and_bad_values(tmp_path):
    model = ClipzooGroupViTModel(_tiny_config(local_attention_radius=2))
    model.save_pretrained(tmp_path)
    reloaded = ClipzooGroupViTModel.from_pretrained(tmp_path)
    assert reloaded.config.local_attention_radius == 2
    assert reloaded.vision_model.local_attention_radius == 2
    assert ClipzooGroupViTModel(_tiny_config()).vision_model.local_attention_radius is None
    per_layer = ClipzooGroupViTModel(_deep_first_stage(local_attention_radius=[1, 0, 0]))
    per_layer.save_pretrained(tmp_path / "per_layer")
    assert ClipzooGroupViTModel.from_pretrained(tmp_path / "per_layer").config.local_attention_radius == [1, 0, 0]
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="local_attention_radius"):
            _tiny_config(local_attention_radius=bad)


def test_group_token_residual_off_makes_groups_depend_on_their_tokens_only():
    from transformers.models.groupvit.modeling_groupvit import GroupViTTokenAssign

    from clipzoo.modeling.modeling_groupvit import ClipzooGroupViTTokenAssign

    config = _tiny_config().vision_config
    torch.manual_seed(0)
    official = GroupViTTokenAssign(config, 8, 4).eval()
    ours = {flag: ClipzooGroupViTTokenAssign(config, 8, 4, group_token_residual=flag).eval() for flag in (True, False)}
    for module in ours.values():
        module.load_state_dict(official.state_dict())
    tokens, groups = torch.randn(1, 16, config.hidden_size), torch.randn(1, 8, config.hidden_size)
    with torch.no_grad():
        reference, reference_attention = official(tokens, groups)
        outputs = {flag: module(tokens, groups) for flag, module in ours.items()}
    torch.testing.assert_close(outputs[True][0], reference)  # True is transformers' (official) block
    torch.testing.assert_close(outputs[True][1], reference_attention)
    assigned = reference_attention[0].argmax(dim=0)  # (tokens,) group of each token
    group = int(assigned[0])
    other = int((assigned != group).nonzero()[0])
    moved = tokens.clone()
    moved[0, other] += 1e-2 * torch.randn(config.hidden_size)
    with torch.no_grad():
        after = {flag: module(moved, groups) for flag, module in ours.items()}
    assert torch.equal(after[False][1][0].argmax(dim=0), assigned)  # the assignment did not change
    # Without the group-token term, a group's output ignores the tokens assigned elsewhere; with it, it does not.
    torch.testing.assert_close(after[False][0][0, group], outputs[False][0][0, group], atol=1e-6, rtol=0)
    assert (after[True][0][0, group] - outputs[True][0][0, group]).abs().max() > 1e-5


def test_default_model_keeps_transformers_grouping_blocks():
    # Building replacement blocks would draw from the RNG and change the official model's initial weights per seed.
    from transformers.models.groupvit.modeling_groupvit import GroupViTTokenAssign

    model = ClipzooGroupViTModel(_tiny_config())
    blocks = [stage.downsample for stage in model.vision_model.encoder.stages if stage.downsample is not None]
    assert blocks and all(type(block) is GroupViTTokenAssign for block in blocks)


def test_group_token_residual_round_trip(tmp_path):
    ClipzooGroupViTModel(_tiny_config(group_token_residual=False)).save_pretrained(tmp_path)
    model = ClipzooGroupViTModel.from_pretrained(tmp_path)
    assert model.config.group_token_residual is False
    blocks = [stage.downsample for stage in model.vision_model.encoder.stages if stage.downsample is not None]
    assert blocks and not any(block.group_token_residual for block in blocks)
    pixels = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        assert model.get_image_features(pixels).shape == (2, model.config.projection_dim)


def _slow_within_group_block(block, tokens, groups):
    """`ClipzooGroupViTTokenAssign(within_group_layers=n)` in eval mode written out per group: each group's tokens run
    through the layers on their own (no mask), then are averaged into the group; no group-token term."""
    group_tokens = block.norm_tokens(groups)
    image_tokens = block.norm_x(tokens)
    queries = block.pre_assign_attn(block.project_group_token(group_tokens), image_tokens)
    raw = block.assign.q_proj(queries) @ block.assign.k_proj(image_tokens).transpose(-2, -1) * block.assign.scale
    label = raw[0].argmax(dim=0)
    out = torch.zeros(queries.shape[1], tokens.shape[-1])
    for g in range(queries.shape[1]):
        members = (label == g).nonzero()[:, 0]
        if len(members) == 0:
            continue
        part = image_tokens[:, members]
        for layer in block.within_group_layers:
            part = layer(part)
        pooled = block.assign.v_proj(part)[0].sum(0) / (len(members) + block.assign.assign_eps)
        out[g] = block.assign.proj(pooled)
    out = out[None]
    return out + block.mlp_channels(block.norm_new_x(out))


def test_within_group_layers_match_per_group_reference_and_stay_inside_groups():
    from clipzoo.modeling.modeling_groupvit import ClipzooGroupViTTokenAssign

    config = _tiny_config().vision_config
    torch.manual_seed(0)
    block = ClipzooGroupViTTokenAssign(config, 8, 4, group_token_residual=False, within_group_layers=2).eval()
    tokens, groups = torch.randn(1, 16, config.hidden_size), torch.randn(1, 8, config.hidden_size)
    with torch.no_grad():
        out, attention = block(tokens, groups)
        expected = _slow_within_group_block(block, tokens, groups)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    assert len(attention[0].argmax(dim=0).unique()) > 1  # the check covers several groups
    # The layers change the result (they are not skipped), and the default block has none.
    plain = ClipzooGroupViTTokenAssign(config, 8, 4, group_token_residual=False).eval()
    plain.load_state_dict(block.state_dict(), strict=False)
    with torch.no_grad():
        assert (plain(tokens, groups)[0] - out).abs().max() > 1e-4
    assert len(ClipzooGroupViTTokenAssign(config, 8, 4).within_group_layers) == 0


def test_within_group_layers_config_round_trip_and_bad_values(tmp_path):
    model = ClipzooGroupViTModel(_tiny_config(within_group_layers=1, group_token_residual=False))
    model.save_pretrained(tmp_path)
    reloaded = ClipzooGroupViTModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.within_group_layers == 1
    blocks = [stage.downsample for stage in reloaded.vision_model.encoder.stages if stage.downsample is not None]
    assert blocks and all(len(block.within_group_layers) == 1 for block in blocks)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded.get_image_features(pixels), model.eval().get_image_features(pixels))
    # Training mode (Gumbel hard assignment) runs and reaches the within-group layers.
    model.train()
    input_ids, pixels = _inputs(model.config, batch=2, num_texts=1 + model.config.multi_label)
    model(input_ids=input_ids, pixel_values=pixels, return_loss=True).loss.backward()
    trained = [stage.downsample for stage in model.vision_model.encoder.stages if stage.downsample is not None]
    assert all(
        p.grad is not None and p.grad.abs().sum() > 0 for p in trained[0].within_group_layers[0].mlp.parameters()
    )
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="within_group_layers"):
            _tiny_config(within_group_layers=bad)
