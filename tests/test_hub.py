"""Tests for clipzoo.hub: flat remote-code export, model cards, and pushing (with HfApi mocked).

The remote-code round trip runs in a subprocess where the exported package cannot be imported (a meta-path blocker)
and `HF_HOME` is a temporary directory, so `trust_remote_code=True` must load the bundled copy.
"""

import ast
import importlib
import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch
import transformers
from huggingface_hub import EvalResult, HfApi, ModelCard
from huggingface_hub import constants as hf_constants
from PIL import Image
from safetensors.torch import save_file

import clipzoo.variants
from clipzoo import hub
from clipzoo.variants import CardFacts, Variant


# ---------------------------------------------------------------------------------------------------------------------
# A tiny fake package laid out like clipzoo (configuration/, modeling/, processing/ subpackages).
# "fakezoo" is replaced by a unique package name per test.
# ---------------------------------------------------------------------------------------------------------------------

FAKE_FILES = {
    "__init__.py": "",
    "configuration/__init__.py": "",
    "configuration/configuration_toy.py": """
        from transformers import PreTrainedConfig


        class ToyConfig(PreTrainedConfig):
            model_type = "clipzoo_fakezoo"

            vocab_size: int = 16
            hidden_size: int = 8
            image_size: int = 4
        """,
    "modeling/__init__.py": "",
    "modeling/layers_toy.py": """
        import torch
        from torch import nn


        class ToyBlock(nn.Module):
            def __init__(self, dim):
                super().__init__()
                self.proj = nn.Linear(dim, dim)

            def forward(self, x):
                return torch.tanh(self.proj(x))
        """,
    "modeling/modeling_toy.py": """
        from dataclasses import dataclass

        import torch
        from torch import nn
        from transformers import PreTrainedModel
        from transformers.utils import ModelOutput

        from fakezoo.configuration.configuration_toy import ToyConfig
        from ..configuration.configuration_toy import (
            ToyConfig as ToyConfigAlias,  # multi-line relative import
        )
        from .layers_toy import ToyBlock

        try:
            import not_a_real_package_xyz  # optional dependency, guarded
        except ImportError:
            not_a_real_package_xyz = None


        def _make_head(dim):
            from fakezoo.modeling.layers_toy import ToyBlock as Block  # function-level package import

            return Block(dim)


        @dataclass
        class ToyOutput(ModelOutput):
            logits_per_image: torch.FloatTensor | None = None
            logits_per_text: torch.FloatTensor | None = None


        class ToyModel(PreTrainedModel):
            config_class = ToyConfig
            base_model_prefix = "toy"

            def __init__(self, config: ToyConfigAlias):
                super().__init__(config)
                self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
                self.pixel_proj = nn.Linear(3 * config.image_size**2, config.hidden_size)
                self.block = ToyBlock(config.hidden_size)
                self.head = _make_head(config.hidden_size)
                self.post_init()

            def forward(self, input_ids=None, pixel_values=None, attention_mask=None, **kwargs):
                mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
                tokens = self.embed(input_ids) * mask[..., None]
                text = self.head(self.block(tokens.sum(1) / mask.sum(1, keepdim=True)))
                image = self.head(self.block(self.pixel_proj(pixel_values.flatten(1))))
                logits = image @ text.T
                return ToyOutput(logits_per_image=logits, logits_per_text=logits.T)
        """,
    "processing/__init__.py": "",
    "processing/image_processing_toy.py": """
        import numpy as np
        from transformers import BatchFeature, ImageProcessingMixin


        class ToyImageProcessor(ImageProcessingMixin):
            model_input_names = ["pixel_values"]

            def __init__(self, size=4, **kwargs):
                super().__init__(**kwargs)
                self.size = size

            def __call__(self, images, return_tensors=None, **kwargs):
                images = images if isinstance(images, list) else [images]
                arrays = [
                    np.asarray(image.convert("RGB").resize((self.size, self.size)), dtype=np.float32).transpose(2, 0, 1)
                    / 255.0
                    for image in images
                ]
                return BatchFeature({"pixel_values": np.stack(arrays)}, tensor_type=return_tensors)
        """,
    "processing/processing_toy.py": """
        from transformers import BatchFeature, ProcessorMixin

        from fakezoo.processing.image_processing_toy import ToyImageProcessor  # noqa: F401


        class ToyProcessor(ProcessorMixin):
            def __init__(self, image_processor=None, tokenizer=None, **kwargs):
                super().__init__(image_processor, tokenizer)

            def __call__(self, text=None, images=None, return_tensors=None, padding=False, **kwargs):
                data = {}
                if text is not None:
                    data.update(self.tokenizer(text, return_tensors=return_tensors, padding=padding))
                if images is not None:
                    data.update(self.image_processor(images, return_tensors=return_tensors))
                return BatchFeature(data)
        """,
}

WORDS = ["[PAD]", "[UNK]", "a", "red", "blue", "green", "circle", "square", "photo", "of"]
TEXTS = ["a red circle", "a blue square of a photo"]

CARD = CardFacts(
    title="Toy Paper: Tiny Models for Tests",
    arxiv="2101.00001",
    official_repo="example/toy",
    license="apache-2.0",
    summary="A toy dual encoder used to test the exporter.",
    citation="@article{toy2021,\n  title={Toy},\n  year={2021}\n}",
    base_model="openai/clip-vit-base-patch32",
    datasets=("shapesworld",),
    metrics=("accuracy",),
    tags=("toy",),
    notes="Nothing differs; it is a toy.",
)

EVAL_ROWS = [
    {
        "task_type": "zero-shot-image-classification",
        "dataset_type": "shapesworld",
        "dataset_name": "ShapesWorld",
        "dataset_split": "test",
        "metric_type": "accuracy",
        "metric_name": "Top-1 accuracy",
        "metric_value": 0.875,
    }
]

LOADER_SCRIPT = r"""
import importlib.abc
import json
import sys
import traceback

spec = json.loads(open(sys.argv[1]).read())


class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == blocked or name.startswith(blocked + ".") for blocked in spec["blocked"]):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")


sys.meta_path.insert(0, _Block())

import numpy as np
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file


def check(case):
    folder = case["folder"]
    inputs = load_file(case["inputs"])
    kwargs = case.get("kwargs", {})
    expected = load_file(case["expected"])
    for auto_name in case["auto_classes"]:
        model = getattr(transformers, auto_name).from_pretrained(folder, trust_remote_code=True).eval()
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        with torch.no_grad():
            outputs = model(**inputs, **kwargs)
        for key, value in expected.items():
            torch.testing.assert_close(outputs[key], value, rtol=1e-5, atol=1e-6, msg=f"{auto_name} {key}")
    if case.get("image_processor"):
        image_processor = transformers.AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        assert type(image_processor).__name__ == case["image_processor"], type(image_processor)
        assert type(image_processor).__module__.startswith("transformers_modules."), type(image_processor).__module__
    if case.get("texts") is not None:
        processor = transformers.AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        assert type(processor).__module__.startswith("transformers_modules."), type(processor).__module__
        image_processor = transformers.AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
        assert type(image_processor).__name__ == type(processor.image_processor).__name__
        image = Image.fromarray(np.load(case["image"]))
        batch = processor(text=case["texts"], images=[image, image], return_tensors="pt", padding=True)
        for key, value in inputs.items():
            torch.testing.assert_close(batch[key], value, msg=f"processor {key}")
    for name in spec["blocked"]:
        assert name not in sys.modules, name


results = {}
for case in spec["cases"]:
    try:
        check(case)
        results[case["id"]] = "OK"
    except Exception:
        results[case["id"]] = traceback.format_exc()
with open(spec["results"], "w") as f:
    json.dump(results, f)
"""


def _write_package(root: Path, name: str, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / name / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip().replace("fakezoo", name), encoding="utf-8")


class _Packages:
    """Writes uniquely named packages under `src` (put on sys.path) and forgets them on close()."""

    def __init__(self, src: Path):
        self.src, self.names = src, []
        sys.path.insert(0, str(src))

    def make(self, files: dict[str, str]) -> str:
        name = f"fakezoo_{uuid.uuid4().hex[:8]}"
        _write_package(self.src, name, files)
        importlib.invalidate_caches()
        self.names.append(name)
        return name

    def close(self) -> None:
        sys.path.remove(str(self.src))
        for module in list(sys.modules):
            if any(module == name or module.startswith(name + ".") for name in self.names):
                del sys.modules[module]


@pytest.fixture
def make_package(tmp_path):
    packages = _Packages(tmp_path / "src")
    yield packages.make
    packages.close()


def _run_blocked_loader(root: Path, cases: list[dict], blocked: list[str]) -> dict[str, str]:
    """Loads every case in ONE fresh process that cannot import `blocked`; returns {case id: "OK" or traceback}."""
    spec_path, script = root / "loader_spec.json", root / "load_blocked.py"
    spec_path.write_text(json.dumps({"cases": cases, "blocked": blocked, "results": str(root / "results.json")}))
    script.write_text(LOADER_SCRIPT)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "HF_MODULES_CACHE")}
    env.update(
        HF_HOME=str(root / "hf_home"),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        HF_EVALUATE_OFFLINE="1",
    )
    result = subprocess.run(
        [sys.executable, str(script), str(spec_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"blocked loader crashed:\n{result.stdout}\n{result.stderr[-6000:]}"
    return json.loads((root / "results.json").read_text())


def _tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    backend = Tokenizer(WordLevel({word: i for i, word in enumerate(WORDS)}, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")


def _toy(name: str):
    config_module = importlib.import_module(f"{name}.configuration.configuration_toy")
    modeling = importlib.import_module(f"{name}.modeling.modeling_toy")
    image_processing = importlib.import_module(f"{name}.processing.image_processing_toy")
    processing = importlib.import_module(f"{name}.processing.processing_toy")
    torch.manual_seed(0)
    model = modeling.ToyModel(config_module.ToyConfig()).eval()
    processor = processing.ToyProcessor(image_processor=image_processing.ToyImageProcessor(), tokenizer=_tokenizer())
    return model, processor, modeling, processing


# ---------------------------------------------------------------------------------------------------------------------
# (1) export + reload in a process where the package cannot be imported
# ---------------------------------------------------------------------------------------------------------------------


def _toy_variant(name: str, modeling, processing, image_processing_class) -> Variant:
    return Variant(
        slug=name,
        config_class=modeling.ToyConfig,
        model_class=modeling.ToyModel,
        processor_class=processing.ToyProcessor,
        image_processor_class=image_processing_class,
        task_classes={"AutoModelForZeroShotImageClassification": modeling.ToyModel},
        pipeline_tag="zero-shot-image-classification",
        tiny_config=modeling.ToyConfig,
        tiny_inputs=lambda config, seed: {},
        card=CARD,
    )


def _fake_case(root: Path, packages: _Packages) -> tuple[dict, str]:
    """Exports the fake package's model through an injected VARIANTS row; returns the loader case and the name."""
    name = packages.make(FAKE_FILES)
    model, processor, modeling, processing = _toy(name)
    variant = _toy_variant(name, modeling, processing, type(processor.image_processor))
    assert model.config.model_type == f"clipzoo_{name}"
    with pytest.MonkeyPatch.context() as patch:
        # slug, card facts, pipeline tag and the classes to bundle all come from the row found through model_type
        patch.setitem(clipzoo.variants.VARIANTS, name, variant)
        out = hub.export(model, root / "fake_export", processor=processor, eval_results=EVAL_ROWS)
    image_array = np.random.default_rng(0).integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
    np.save(root / "image.npy", image_array)
    image = Image.fromarray(image_array)
    inputs = dict(processor(text=TEXTS, images=[image, image], return_tensors="pt", padding=True))
    with torch.no_grad():
        outputs = model(**inputs)
    save_file({k: v.contiguous() for k, v in inputs.items()}, root / "fake_inputs.safetensors")
    save_file({"logits_per_image": outputs.logits_per_image}, root / "fake_expected.safetensors")
    case = {
        "id": "fake",
        "folder": str(out),
        "inputs": str(root / "fake_inputs.safetensors"),
        "expected": str(root / "fake_expected.safetensors"),
        "auto_classes": ["AutoModel", "AutoModelForZeroShotImageClassification"],
        "texts": TEXTS,
        "image": str(root / "image.npy"),
    }
    return case, name


@pytest.fixture(scope="module")
def blocked_round_trip(tmp_path_factory):
    """Exports the fake package and every VARIANTS row, then reloads all of them in ONE subprocess that cannot import
    the fake package or clipzoo (one interpreter start instead of one per model)."""
    root = tmp_path_factory.mktemp("blocked_round_trip")
    packages = _Packages(root / "src")
    try:
        fake_case, name = _fake_case(root, packages)
        cases = [fake_case] + [_variant_case(root, slug) for slug in _VARIANT_SLUGS]
        results = _run_blocked_loader(root, cases, blocked=[name, "clipzoo"])
        yield SimpleNamespace(name=name, out=Path(fake_case["folder"]), results=results, root=root)
    finally:
        packages.close()


def test_export_fake_package_loads_with_remote_code_in_blocked_subprocess(blocked_round_trip):
    name, out = blocked_round_trip.name, blocked_round_trip.out
    expected_files = {"configuration_toy.py", "modeling_toy.py", "layers_toy.py"}
    expected_files |= {"processing_toy.py", "image_processing_toy.py"}
    assert {p.name for p in out.glob("*.py")} == expected_files
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    for path in out.glob("*.py"):  # no import of the package survives, and every rewritten import is single-dot
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert not (node.module or "").startswith(name), (path.name, node.module)
                assert node.level in (0, 1), (path.name, node.level)
    modeling_text = (out / "modeling_toy.py").read_text()
    assert "from .configuration_toy import ToyConfig\n" in modeling_text
    assert "from .configuration_toy import ToyConfig as ToyConfigAlias\n" in modeling_text
    assert "    from .layers_toy import ToyBlock as Block  # function-level package import\n" in modeling_text

    config = json.loads((out / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_toy.ToyConfig",
        "AutoModel": "modeling_toy.ToyModel",
        "AutoModelForZeroShotImageClassification": "modeling_toy.ToyModel",
    }
    processor_config = json.loads((out / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"] == "processing_toy.ToyProcessor"
    assert processor_config["image_processor"]["auto_map"]["AutoImageProcessor"] == (
        "image_processing_toy.ToyImageProcessor"
    )
    assert json.loads((out / "tokenizer_config.json").read_text())["auto_map"]["AutoProcessor"]
    card = ModelCard.load(out / "README.md")
    assert card.data.model_name == f"clipzoo-{name}" and card.data.eval_results == [EvalResult(**EVAL_ROWS[0])]
    # model logits, processor outputs and the Auto classes, loaded from the bundled code only
    assert blocked_round_trip.results["fake"] == "OK", blocked_round_trip.results["fake"]


def test_collect_remote_code_returns_auto_map_and_skips_transformers_classes(make_package, tmp_path):
    name = make_package(FAKE_FILES)
    modeling = importlib.import_module(f"{name}.modeling.modeling_toy")
    auto_map = hub.collect_remote_code(
        {
            "AutoConfig": modeling.ToyConfig,
            "AutoModel": modeling.ToyModel,
            "AutoTokenizer": transformers.CLIPTokenizer,
        },
        tmp_path / "code",
    )
    assert auto_map == {"AutoConfig": "configuration_toy.ToyConfig", "AutoModel": "modeling_toy.ToyModel"}
    assert sorted(p.name for p in (tmp_path / "code").iterdir()) == [
        "configuration_toy.py",
        "layers_toy.py",
        "modeling_toy.py",
    ]
    assert hub.collect_remote_code({"AutoModel": transformers.CLIPModel}) == {}


def test_export_plain_transformers_model_needs_no_remote_code(tmp_path):
    config = transformers.CLIPConfig(
        text_config={"vocab_size": 20, "hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 8},
        vision_config={"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 8, "patch_size": 4},
        projection_dim=8,
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.CLIPModel(config).eval()
    model.save_pretrained(tmp_path / "trained")
    out = hub.export(tmp_path / "trained", tmp_path / "export", slug="backbone", card=CARD, eval_results=EVAL_ROWS)
    assert not list(out.glob("*.py"))
    assert "auto_map" not in json.loads((out / "config.json").read_text())
    card = ModelCard.load(out / "README.md")
    assert card.data.library_name == "clipzoo" and "custom_code" not in card.data.tags
    assert "trust_remote_code" not in card.text
    reloaded = transformers.AutoModel.from_pretrained(out)
    inputs = {"input_ids": torch.tensor([[1, 2, 3]]), "pixel_values": torch.randn(2, 3, 8, 8)}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits_per_image, model(**inputs).logits_per_image)


# ---------------------------------------------------------------------------------------------------------------------
# (2) refusals
# ---------------------------------------------------------------------------------------------------------------------

_CONFIG_ONLY = {k: v for k, v in FAKE_FILES.items() if k.startswith(("__init__", "configuration/"))}


def _bad_model_package(make_package, imports: str, extra: dict[str, str] | None = None) -> type:
    files = dict(_CONFIG_ONLY)
    files["modeling/__init__.py"] = ""
    files["modeling/modeling_bad.py"] = imports + "\n\nclass BadModel:\n    pass\n"
    files.update(extra or {})
    name = make_package(files)
    return importlib.import_module(f"{name}.modeling.modeling_bad").BadModel


@pytest.mark.parametrize(
    "imports, extra, match",
    [
        ("import fakezoo.configuration.configuration_toy", None, r"`import PKG\.configuration"),
        (
            "from fakezoo.configuration import configuration_toy",
            None,
            r"imports the package 'PKG\.configuration' \(its __init__\)",
        ),
        (
            "from fakezoo.configuration import ToyConfig",
            {"configuration/__init__.py": "from .configuration_toy import ToyConfig\n"},
            r"imports the package .*__init__",
        ),
        ("from ..configuration import configuration_toy", None, r"imports the package .*__init__"),
        ("from . import layers_bad", {"modeling/layers_bad.py": ""}, r"imports the package .*__init__"),
        (
            "from fakezoo.modeling.utils_toy import A\nfrom fakezoo.configuration.utils_toy import B",
            {"modeling/utils_toy.py": "A = 1\n", "configuration/utils_toy.py": "B = 2\n"},
            r"basenames must be unique.*utils_toy: PKG\.configuration\.utils_toy, PKG\.modeling\.utils_toy",
        ),
        ("import yaml", None, r"at top level.*modeling_bad\.py:1: yaml"),
        ("from yaml import safe_load", None, r"modeling_bad\.py:1: yaml"),
        ("if True:\n    import yaml", None, r"modeling_bad\.py:2: yaml"),
    ],
    ids=["plain-import", "package-submodule", "package-init-name", "relative-package", "dot-package", "duplicate",
         "third-party", "third-party-from", "third-party-if"],
)  # fmt: skip
def test_remote_code_refusals(make_package, tmp_path, imports, extra, match):
    bad = _bad_model_package(make_package, imports, extra)
    match = match.replace("PKG", bad.__module__.split(".")[0])  # the package name is unique per test
    with pytest.raises(ValueError, match=match):
        hub.remote_code_sources({"AutoModel": bad})
    # export refuses before writing anything
    model = mock.MagicMock(spec=transformers.PreTrainedModel)
    model.config = SimpleNamespace(model_type="fake_bad")
    with pytest.raises(ValueError, match=match):
        hub.export(model, tmp_path / "never", slug="bad", card=CARD, auto_classes={"AutoModel": bad})
    assert not (tmp_path / "never").exists()


def test_guarded_and_function_level_optional_imports_are_allowed(make_package):
    imports = (
        "try:\n    import yaml\nexcept ImportError:\n    yaml = None\n\n\n"
        "def load():\n    import yaml as y\n\n    return y\n"
    )
    bad = _bad_model_package(make_package, imports)
    files = hub.remote_code_sources({"AutoModel": bad})
    assert list(files) == ["modeling_bad.py"]


# ---------------------------------------------------------------------------------------------------------------------
# (3) model card
# ---------------------------------------------------------------------------------------------------------------------


def test_model_card_renders_and_round_trips(tmp_path):
    card = hub.render_model_card(
        CARD,
        slug="toy",
        pipeline_tag="zero-shot-image-classification",
        eval_results=EVAL_ROWS,
        card_vars={"repo_id": "someone/clipzoo-toy"},
    )
    card.save(tmp_path / "README.md")
    assert (tmp_path / "README.md").read_text().startswith("---\n")
    loaded = ModelCard.load(tmp_path / "README.md")
    data = loaded.data
    assert data.pipeline_tag == "zero-shot-image-classification"
    assert data.library_name == "clipzoo"
    assert data.base_model == "openai/clip-vit-base-patch32"
    assert data.license == "apache-2.0"
    assert data.datasets == ["shapesworld"]
    assert {"clipzoo", "toy", "vision-language", "custom_code", "arxiv:2101.00001"} <= set(data.tags)
    assert data.model_name == "clipzoo-toy"
    assert data.eval_results == [EvalResult(**EVAL_ROWS[0])]
    text = loaded.text
    assert "# clipzoo-toy: Toy Paper: Tiny Models for Tests" in text
    assert "https://arxiv.org/abs/2101.00001" in text
    assert 'AutoModel.from_pretrained("someone/clipzoo-toy", trust_remote_code=True)' in text
    assert "import clipzoo" in text
    assert "| zero-shot-image-classification | ShapesWorld | test | Top-1 accuracy | 0.875 |" in text
    assert "Nothing differs; it is a toy." in text and "@article{toy2021," in text


def test_model_card_renders_for_minimal_facts_and_video():
    facts = CardFacts(title="T", arxiv="", official_repo="", license="", summary="S", citation="")
    card = hub.render_model_card(facts, slug="vid", pipeline_tag="video-classification", remote_code=False)
    assert "logits_per_video" in card.text and "No evaluation results" in card.text
    assert "{{" not in card.text and "{%" not in card.text


def test_eval_results_validation():
    assert hub.to_eval_results(EVAL_ROWS)[0].metric_value == 0.875
    with pytest.raises(ValueError, match="metric_valu"):
        hub.to_eval_results([{k: v for k, v in EVAL_ROWS[0].items() if k != "metric_value"}])
    with pytest.raises(ValueError, match="score"):
        hub.to_eval_results([{**EVAL_ROWS[0], "score": 1}])


# ---------------------------------------------------------------------------------------------------------------------
# (4) overwrite protection
# ---------------------------------------------------------------------------------------------------------------------


def test_export_into_non_empty_dir_needs_overwrite(make_package, tmp_path):
    name = make_package(FAKE_FILES)
    model, processor, modeling, processing = _toy(name)
    out = tmp_path / "export"
    out.mkdir()
    (out / "stale_module.py").write_text("x = 1\n")
    (out / "processor_config.json").write_text("{}")
    with pytest.raises(FileExistsError, match="--overwrite"):
        hub.export(model, out, slug="toy", card=CARD)
    hub.export(model, out, slug="toy", card=CARD, overwrite=True)
    assert not (out / "stale_module.py").exists() and not (out / "processor_config.json").exists()
    assert {p.name for p in out.glob("*.py")} == {"configuration_toy.py", "modeling_toy.py", "layers_toy.py"}


# ---------------------------------------------------------------------------------------------------------------------
# (5) push
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def exported_folder(tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return folder


def test_push_calls_hfapi_with_expected_kwargs(exported_folder, monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    with (
        mock.patch.object(HfApi, "create_repo") as create_repo,
        mock.patch.object(HfApi, "upload_folder", return_value="commit-info") as upload_folder,
    ):
        result = hub.push(exported_folder, "someone/clipzoo-toy", private=True, commit_message="msg")
    assert result == "commit-info"
    create_repo.assert_called_once_with(repo_id="someone/clipzoo-toy", private=True, exist_ok=True, repo_type="model")
    upload_folder.assert_called_once_with(
        repo_id="someone/clipzoo-toy",
        folder_path=str(exported_folder),
        commit_message="msg",
        repo_type="model",
        revision=None,
    )


def test_push_wraps_network_errors(exported_folder, monkeypatch):
    import httpx2

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    error = httpx2.ConnectError("[Errno -2] Name or service not known")
    with mock.patch.object(HfApi, "create_repo", side_effect=error), mock.patch.object(HfApi, "upload_folder"):
        with pytest.raises(RuntimeError, match="Could not reach the Hugging Face Hub") as info:
            hub.push(exported_folder, "someone/clipzoo-toy")
    assert info.value.__cause__ is error


def test_push_offline_fails_fast_without_network(exported_folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with (
        mock.patch.object(HfApi, "create_repo") as create_repo,
        mock.patch.object(HfApi, "upload_folder") as upload_folder,
    ):
        start = time.perf_counter()
        with pytest.raises(RuntimeError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\).*Unset HF_HUB_OFFLINE"):
            hub.push(exported_folder, "someone/clipzoo-toy")
        assert time.perf_counter() - start < 2.0
    create_repo.assert_not_called()
    upload_folder.assert_not_called()


def test_push_requires_an_exported_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        hub.push(tmp_path, "someone/x")


# ---------------------------------------------------------------------------------------------------------------------
# Every VARIANTS row: export a tiny random model and reload it with the package blocked.
# ---------------------------------------------------------------------------------------------------------------------

clipzoo.variants._load()
_VARIANT_SLUGS = sorted(clipzoo.variants.VARIANTS)


def _tensor_outputs(outputs) -> dict[str, torch.Tensor]:
    items = outputs.items() if hasattr(outputs, "items") else [("output", outputs)]
    return {key: value.detach().contiguous() for key, value in items if isinstance(value, torch.Tensor)}


def _default_image_processor(variant):
    if variant.processor_class is not None or variant.image_processor_class is None:
        return None  # a full processor needs a tokenizer, which the row does not describe
    try:
        return variant.image_processor_class()
    except TypeError:
        return None


def _variant_case(root: Path, slug: str) -> dict:
    """Exports a tiny random model of one row (from a saved directory, as `clipzoo export <dir>` does)."""
    variant = clipzoo.variants.VARIANTS[slug]
    torch.manual_seed(0)
    config = variant.tiny_config()
    model = variant.model_class(config).eval()
    inputs = variant.tiny_inputs(config, 0)
    with torch.no_grad():
        expected = _tensor_outputs(model(**inputs))
    model.save_pretrained(root / f"{slug}_trained")
    image_processor = _default_image_processor(variant)
    if image_processor is not None:
        image_processor.save_pretrained(root / f"{slug}_trained")
    out = hub.export(root / f"{slug}_trained", root / slug, eval_results=EVAL_ROWS)
    tensors = {k: v.contiguous() for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    save_file(tensors, root / f"{slug}_inputs.safetensors")
    save_file(expected, root / f"{slug}_expected.safetensors")
    task_names = [name for name, cls in variant.task_classes.items() if cls is variant.model_class]
    return {
        "id": slug,
        "folder": str(out),
        "inputs": str(root / f"{slug}_inputs.safetensors"),
        "expected": str(root / f"{slug}_expected.safetensors"),
        "auto_classes": ["AutoModel", *task_names],
        "kwargs": {k: v for k, v in inputs.items() if k not in tensors},  # must be JSON values (e.g. flags)
        "image_processor": type(image_processor).__name__ if image_processor is not None else None,
    }


@pytest.mark.parametrize("slug", _VARIANT_SLUGS)
def test_variant_export_reloads_with_remote_code(slug, blocked_round_trip):
    assert blocked_round_trip.results[slug] == "OK", blocked_round_trip.results[slug]
    card = ModelCard.load(blocked_round_trip.root / slug / "README.md")
    variant = clipzoo.variants.VARIANTS[slug]
    assert card.data.pipeline_tag == variant.pipeline_tag
    assert card.data.library_name == "clipzoo"
    assert card.data.eval_results == [EvalResult(**EVAL_ROWS[0])]


def test_variant_usage_section_replaces_the_generic_snippet():
    from clipzoo.hub import render_model_card
    from clipzoo.variants import get_variant

    text = str(render_model_card(get_variant("clip_fsar").card, slug="clip_fsar", pipeline_tag="video-classification"))
    assert text.count("## Usage") == 1
    assert "support_videos=" in text  # the variant's own snippet
    assert "## Protocol" in text  # the rest of the variant text is kept
