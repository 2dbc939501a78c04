"""Common tests, run on every row of the VARIANTS table (timm-style: a new row is tested by being added)."""

import pytest
import torch
import transformers

import clipzoo
from clipzoo.variants import VARIANTS, _load, get_variant


ROWS = sorted(_load())
ROWS_WITH_PROCESSOR = [slug for slug in ROWS if VARIANTS[slug].processor_class and VARIANTS[slug].tiny_processor]


def _tensor_outputs(outputs):
    return {k: v for k, v in outputs.items() if isinstance(v, torch.Tensor)}


def _build(row, seed=0):
    torch.manual_seed(seed)
    config = row.tiny_config()
    model = row.model_class(config).eval()
    return config, model


def test_unknown_variant_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown variant 'nope'"):
        get_variant("nope")


def test_import_registers_every_row():
    clipzoo.register_all()  # idempotent
    for slug, row in VARIANTS.items():
        assert row.model_type == f"clipzoo_{slug}"
        assert transformers.AutoConfig.for_model(row.model_type).__class__ is row.config_class


@pytest.mark.parametrize("slug", ROWS)
def test_names_do_not_shadow_transformers(slug):
    row = VARIANTS[slug]
    classes = [row.config_class, row.model_class, row.processor_class, row.image_processor_class]
    classes += list(row.task_classes.values())
    for cls in filter(None, classes):
        assert not hasattr(transformers, cls.__name__), f"{cls.__name__} is also a transformers export"


@pytest.mark.parametrize("slug", ROWS)
def test_config_round_trip(slug, tmp_path):
    row = VARIANTS[slug]
    config = row.tiny_config()
    config.save_pretrained(tmp_path)
    reloaded = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(reloaded) is row.config_class

    def comparable(c):
        return {k: v for k, v in c.to_dict().items() if k not in ("_name_or_path", "transformers_version")}

    assert comparable(reloaded) == comparable(config)


@pytest.mark.parametrize("slug", ROWS)
def test_forward_is_deterministic_and_finite(slug):
    row = VARIANTS[slug]
    config, model = _build(row)
    inputs = row.tiny_inputs(config, 0)
    with torch.no_grad():
        first, second = _tensor_outputs(model(**inputs)), _tensor_outputs(model(**inputs))
    assert first, "the model returned no tensors"
    for key, value in first.items():
        assert torch.isfinite(value).all(), key
        torch.testing.assert_close(value, second[key], rtol=0, atol=0)


@pytest.mark.parametrize("slug", ROWS)
def test_save_and_reload_with_auto_classes(slug, tmp_path):
    row = VARIANTS[slug]
    config, model = _build(row)
    inputs = row.tiny_inputs(config, 1)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    with torch.no_grad():
        expected = _tensor_outputs(model(**inputs))
    for auto_name, cls in {"AutoModel": row.model_class, **row.task_classes}.items():
        reloaded = getattr(transformers, auto_name).from_pretrained(tmp_path).eval()
        assert isinstance(reloaded, cls)
        if cls is row.model_class:
            with torch.no_grad():
                got = _tensor_outputs(reloaded(**inputs))
            for key, value in expected.items():
                torch.testing.assert_close(got[key], value, rtol=0, atol=1e-6)


@pytest.mark.parametrize("slug", ROWS_WITH_PROCESSOR)
def test_processor_round_trip(slug, tmp_path):
    row = VARIANTS[slug]
    processor = row.tiny_processor()
    row.tiny_config().save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = transformers.AutoProcessor.from_pretrained(tmp_path)
    assert type(reloaded) is row.processor_class
    if row.image_processor_class is not None:
        assert type(transformers.AutoImageProcessor.from_pretrained(tmp_path)) is row.image_processor_class


@pytest.mark.parametrize("slug", ROWS)
def test_wrong_config_type_is_rejected(slug):
    row = VARIANTS[slug]
    other = transformers.CLIPConfig()
    with pytest.raises(TypeError, match=row.config_class.__name__):
        row.model_class(other)


@pytest.mark.parametrize("slug", ROWS)
def test_card_facts_are_complete(slug):
    card = VARIANTS[slug].card
    assert card.title and card.arxiv and card.official_repo and card.license and card.summary
    assert card.citation.lstrip().startswith("@")
