"""Hub export and upload for clipzoo models.

`export` writes a Hub-ready folder: `model.safetensors`, `config.json` with `auto_map`, the processor files, a model
card (`README.md`) rendered from `model_cards/template.md`, and a *flat remote-code bundle*: the package modules the
model needs, copied next to the weights with their intra-package imports rewritten to `from .<module> import ...`.
transformers' own copier (`register_for_auto_class`) only follows same-folder relative imports and crashes on
`from ..configuration.configuration_x import X`, so clipzoo never calls it and bundles the code itself. The folder then
loads with `AutoModel.from_pretrained(folder, trust_remote_code=True)` where clipzoo is not installed.

`push` uploads such a folder with `huggingface_hub`; in offline mode it fails at once instead of retrying.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import shutil
import sys
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import transformers
from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
from transformers.utils import logging

from clipzoo.variants import CardFacts, Variant, get_variant


try:
    from httpx2 import HTTPError as _TransportHTTPError
except ImportError:  # huggingface_hub moved to another HTTP client
    _TransportHTTPError = OSError


__all__ = [
    "ALLOWED_TOP_LEVEL_IMPORTS",
    "LIBRARY_NAME",
    "MODEL_CARDS_DIR",
    "collect_remote_code",
    "export",
    "push",
    "remote_code_sources",
    "render_model_card",
    "to_eval_results",
]

logger = logging.get_logger(__name__)

LIBRARY_NAME = "clipzoo"
MODEL_CARDS_DIR = Path(__file__).resolve().parent.parent / "model_cards"

# Third-party packages a bundled module may import at top level: the ones any clipzoo user has installed.
# transformers' `check_imports` fails the remote-code load when any other unguarded import is missing.
ALLOWED_TOP_LEVEL_IMPORTS = frozenset({"torch", "transformers", "numpy", "PIL", "huggingface_hub", "safetensors"})

_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")
_NESTED_PROCESSOR_KEYS = ("image_processor", "video_processor", "feature_extractor")
_OFFLINE_ENV_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_TRY_NODES = tuple(getattr(ast, name) for name in ("Try", "TryStar") if hasattr(ast, name))


# ---------------------------------------------------------------------------------------------------------------------
# Flat remote-code bundle
# ---------------------------------------------------------------------------------------------------------------------


def _custom_classes(classes: Mapping[str, type | None], package: str | None) -> tuple[dict[str, type], str | None]:
    """Drops classes that transformers itself provides and infers the package that owns the others."""
    custom: dict[str, type] = {}
    packages = set()
    for auto_name, cls in classes.items():
        if cls is None:
            continue
        if not isinstance(cls, type):
            raise TypeError(f"classes[{auto_name!r}] must be a class, got {cls!r}.")
        top = cls.__module__.split(".")[0]
        if top == "transformers":
            continue
        if "." not in cls.__module__:
            raise ValueError(
                f"{cls.__qualname__} is defined in the top-level module {cls.__module__!r}; only classes inside a "
                "package (e.g. clipzoo.modeling.modeling_<slug>) can be exported as remote code."
            )
        custom[auto_name] = cls
        packages.add(top)
    if package is None and len(packages) > 1:
        raise ValueError(f"The classes come from several packages {sorted(packages)}; pass package= explicitly.")
    if package is not None and packages - {package}:
        raise ValueError(
            f"Classes from {sorted(packages - {package})} are neither in package {package!r} nor in transformers."
        )
    return custom, package or next(iter(packages), None)


def _locate(module_name: str) -> tuple[Path, bool]:
    """Returns the source file of `module_name` and whether it is a package `__init__`."""
    try:
        spec = importlib.util.find_spec(module_name)
    except ModuleNotFoundError:
        spec = None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        raise ValueError(f"Cannot find the Python source of module {module_name!r} to bundle it as remote code.")
    return Path(spec.origin), spec.submodule_search_locations is not None


def _is_availability_guard(test: ast.expr) -> bool:
    for node in ast.walk(test):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name.startswith("is_") and name.endswith("available"):
                return True
    return False


def _check_third_party_imports(path: Path, tree: ast.Module, package: str) -> None:
    """Refuses unguarded top-level imports of optional packages; warns about unguarded ones inside functions.

    Mirrors transformers' `check_imports`, which skips `try` blocks and `if is_xxx_available()` blocks but reads every
    other import in the file, function bodies included.
    """
    allowed = ALLOWED_TOP_LEVEL_IMPORTS | set(sys.stdlib_module_names) | {package, "__future__"}
    top_level: list[str] = []
    in_functions: list[str] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, _TRY_NODES) or (isinstance(node, ast.If) and _is_availability_guard(node.test)):
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function = True
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        for name in names:
            if name.split(".")[0] not in allowed:
                (in_functions if in_function else top_level).append(f"{path}:{node.lineno}: {name}")
        for child in ast.iter_child_nodes(node):
            visit(child, in_function)

    visit(tree, False)
    if top_level:
        raise ValueError(
            "Remote-code modules may import only the standard library and "
            f"{', '.join(sorted(ALLOWED_TOP_LEVEL_IMPORTS))} at top level; move these imports inside a function "
            "wrapped in `try/except ImportError`: " + "; ".join(top_level)
        )
    if in_functions:
        logger.warning(
            "transformers will require these packages when the exported model is loaded with trust_remote_code, "
            "because the imports are not inside `try/except ImportError`: " + "; ".join(in_functions)
        )


def _intra_package_target(node: ast.ImportFrom, module_name: str, package: str, path: Path) -> str | None:
    """Absolute name of the package module `node` imports from, or None for an import from outside the package."""
    if node.level:
        relative = "." * node.level + (node.module or "")
        try:
            target = importlib.util.resolve_name(relative, module_name.rpartition(".")[0])
        except ImportError as err:
            raise ValueError(f"{path}:{node.lineno}: cannot resolve `from {relative} import ...`: {err}") from err
    else:
        target = node.module or ""
    if target != package and not target.startswith(package + "."):
        return None
    names = ", ".join(alias.name for alias in node.names)
    if node.module is None or _locate(target)[1]:
        raise ValueError(
            f"{path}:{node.lineno}: `from {'.' * node.level}{node.module or ''} import {names}` imports the package "
            f"{target!r} (its __init__); the remote-code bundle is flat, so import the names from the concrete module "
            f"instead, e.g. `from {target}.<module> import {names}`."
        )
    return target


def _char_offset(line_starts: list[int], lines: list[str], lineno: int, col_offset: int) -> int:
    # ast column offsets count UTF-8 bytes, not characters.
    line = lines[lineno - 1]
    return line_starts[lineno - 1] + len(line.encode("utf-8")[:col_offset].decode("utf-8"))


def _rewrite(source: str, edits: list[tuple[ast.ImportFrom, str]]) -> str:
    """Replaces each intra-package `from ... import` statement by `from .<basename> import <names>`."""
    lines = source.splitlines(keepends=True)
    line_starts = [0]
    for line in lines:
        line_starts.append(line_starts[-1] + len(line))
    spans = []
    for node, target in edits:
        start = _char_offset(line_starts, lines, node.lineno, node.col_offset)
        end = _char_offset(line_starts, lines, node.end_lineno, node.end_col_offset)
        names = ", ".join(alias.name + (f" as {alias.asname}" if alias.asname else "") for alias in node.names)
        spans.append((start, end, f"from .{target.rpartition('.')[2]} import {names}"))
    for start, end, text in sorted(spans, reverse=True):
        source = source[:start] + text + source[end:]
    return source


def _scan_module(module_name: str, package: str) -> tuple[Path, str, list[tuple[ast.ImportFrom, str]]]:
    """Reads one module, validates its imports and returns (path, source, intra-package imports to rewrite)."""
    path, is_package = _locate(module_name)
    if is_package:
        raise ValueError(
            f"Module {module_name!r} is a package __init__; remote code must live in concrete modules "
            "(e.g. clipzoo/modeling/modeling_<slug>.py)."
        )
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(path))
    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    raise ValueError(
                        f"{path}:{node.lineno}: `import {alias.name}` cannot be rewritten for a flat remote-code "
                        f"bundle; use `from {alias.name} import <names>` with a concrete module instead."
                    )
        elif isinstance(node, ast.ImportFrom):
            target = _intra_package_target(node, module_name, package, path)
            if target is not None:
                edits.append((node, target))
    _check_third_party_imports(path, tree, package)
    return path, source, edits


def remote_code_sources(classes: Mapping[str, type | None], *, package: str | None = None) -> dict[str, str]:
    """The flat remote-code bundle for `classes`, as `{file name: rewritten source}`.

    Args:
        classes (`Mapping[str, type | None]`): Auto class name -> class, e.g. `{"AutoConfig": Cfg, "AutoModel": Model}`.
            Classes defined by transformers itself, and `None` values, are skipped.
        package (`str`, *optional*): the top-level package whose modules are bundled; by default inferred from the
            classes (`"clipzoo"`).

    Raises:
        `ValueError`: for imports the flat bundle cannot express (`import clipzoo.x`, imports of a package
        `__init__`), two bundled modules with the same basename, and unguarded top-level imports of packages other
        than the standard library and `ALLOWED_TOP_LEVEL_IMPORTS`.
    """
    custom, package = _custom_classes(classes, package)
    queue = deque(sorted({cls.__module__ for cls in custom.values()}))
    scanned: dict[str, tuple[Path, str, list[tuple[ast.ImportFrom, str]]]] = {}
    while queue:
        module_name = queue.popleft()
        if module_name in scanned:
            continue
        scanned[module_name] = _scan_module(module_name, package)
        queue.extend(target for _, target in scanned[module_name][2])

    by_basename: dict[str, list[str]] = {}
    for module_name in scanned:
        by_basename.setdefault(module_name.rpartition(".")[2], []).append(module_name)
    clashes = {base: names for base, names in by_basename.items() if len(names) > 1}
    if clashes:
        raise ValueError(
            f"Module basenames must be unique across {package!r} for the flat remote-code bundle; clashing: "
            + "; ".join(f"{base}: {', '.join(sorted(names))}" for base, names in sorted(clashes.items()))
        )

    files = {}
    for module_name, (path, source, edits) in sorted(scanned.items()):
        header = f"# Bundled by clipzoo.hub from {module_name} ({path.name}); package imports rewritten flat.\n"
        files[f"{module_name.rpartition('.')[2]}.py"] = header + _rewrite(source, edits)
    return files


def collect_remote_code(
    classes: Mapping[str, type | None], out_dir: str | os.PathLike | None = None, *, package: str | None = None
) -> dict[str, str]:
    """Bundles the modules `classes` need as flat remote code and returns the `auto_map` entries.

    Starting from each class's module, follows every import from the same package (absolute or relative, multi-line
    included), copies the modules flat into `out_dir` and rewrites those imports to `from .<basename> import ...`.

    Args:
        classes (`Mapping[str, type | None]`): Auto class name -> class, e.g. `{"AutoConfig": ClipzooGroupViTConfig,
            "AutoModel": ClipzooGroupViTModel, "AutoProcessor": ..., "AutoImageProcessor": ...}`.
        out_dir (`str` or `os.PathLike`, *optional*): where to write the modules; when omitted, only validates and
            returns the map.
        package (`str`, *optional*): see `remote_code_sources`.

    Returns:
        `dict[str, str]`: e.g. `{"AutoModel": "modeling_groupvit.ClipzooGroupViTModel", ...}`; empty when every class
        comes from transformers.

    Examples:

    ```python
    >>> auto_map = collect_remote_code({"AutoConfig": MyConfig, "AutoModel": MyModel}, "export_dir")
    >>> auto_map["AutoModel"]
    'modeling_my.MyModel'
    ```
    """
    files = remote_code_sources(classes, package=package)
    custom, _ = _custom_classes(classes, package)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (out / name).write_text(text, encoding="utf-8")
    return {auto: f"{cls.__module__.rpartition('.')[2]}.{cls.__qualname__}" for auto, cls in custom.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------------------


def _prepare_out_dir(out_dir: str | os.PathLike, overwrite: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"Export target {out} exists and is not a directory.")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(
                f"Export directory {out} is not empty. Pass overwrite=True (`clipzoo export ... --overwrite`) to "
                "replace an earlier export there, or choose an empty directory."
            )
        # Stale modules, weight shards or processor files from an earlier export would be picked up by the loader.
        stale_names = [*_PROCESSOR_FILES, "tokenizer.json", "special_tokens_map.json", "__pycache__"]
        for stale in [*out.glob("*.py"), *out.glob("model*.safetensors*"), *(out / name for name in stale_names)]:
            if not stale.exists():
                continue
            shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _variant_for(model: transformers.PreTrainedModel, slug: str | None, card: CardFacts | None) -> Variant | None:
    model_type = model.config.model_type
    if slug is None and model_type.startswith("clipzoo_"):
        slug = model_type[len("clipzoo_") :]
    if slug is None:
        return None
    try:
        variant = get_variant(slug)
    except ValueError:
        if card is not None:
            return None
        raise
    if variant.model_type != model_type:
        raise ValueError(f"slug={slug!r} expects model_type {variant.model_type!r}, but the model is {model_type!r}.")
    return variant


def _load_model_dir(path: Path) -> tuple[transformers.PreTrainedModel, Any]:
    """Loads a saved model (and its processor, when saved alongside) with the clipzoo classes registered."""
    import clipzoo  # noqa: F401  (registers every VARIANTS row with the Auto classes)

    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json; expected a directory written by save_pretrained.")
    config = transformers.AutoConfig.from_pretrained(path)
    candidates: dict[str, type] = {}
    if config.model_type.startswith("clipzoo_"):
        variant = get_variant(config.model_type[len("clipzoo_") :])
        candidates = {cls.__name__: cls for cls in (variant.model_class, *variant.task_classes.values())}
    architecture = (config.architectures or [""])[0]
    model_class = candidates.get(architecture) or getattr(transformers, architecture, None) or transformers.AutoModel
    model = model_class.from_pretrained(path)
    processor = None
    if any((path / name).is_file() for name in _PROCESSOR_FILES):
        processor = transformers.AutoProcessor.from_pretrained(path)
    return model, processor


def _auto_classes(model: Any, processor: Any, variant: Variant | None) -> dict[str, type | None]:
    if variant is not None:
        classes: dict[str, type | None] = {
            "AutoConfig": variant.config_class,
            "AutoModel": variant.model_class,
            **variant.task_classes,
        }
        if isinstance(processor, transformers.ProcessorMixin):
            classes["AutoProcessor"] = variant.processor_class
        if isinstance(processor, (transformers.ProcessorMixin, transformers.ImageProcessingMixin)):
            classes["AutoImageProcessor"] = variant.image_processor_class
        if type(model) not in classes.values():
            logger.warning(f"{type(model).__name__} is not among the classes of variant {variant.slug!r}.")
        return classes
    classes = {"AutoConfig": type(model.config), "AutoModel": type(model)}
    if isinstance(processor, transformers.ProcessorMixin):
        classes["AutoProcessor"] = type(processor)
        image_processor = getattr(processor, "image_processor", None)
        classes["AutoImageProcessor"] = type(image_processor) if image_processor is not None else None
    elif isinstance(processor, transformers.ImageProcessingMixin):
        classes["AutoImageProcessor"] = type(processor)
    return classes


def _update_json(path: Path, update: Any) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    update(data)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _merge_auto_map(out: Path, auto_map: Mapping[str, str]) -> None:
    """Adds the model entries to config.json and the processor entries to the processor files."""
    model_map = {k: v for k, v in auto_map.items() if k == "AutoConfig" or k.startswith("AutoModel")}
    processor_map = {k: v for k, v in auto_map.items() if k not in model_map}
    if model_map:
        _update_json(out / "config.json", lambda data: data.setdefault("auto_map", {}).update(model_map))
    if not processor_map:
        return

    def merge_processor(data: dict) -> None:
        data.setdefault("auto_map", {}).update(processor_map)
        for key in _NESTED_PROCESSOR_KEYS:
            if isinstance(data.get(key), dict):
                data[key].setdefault("auto_map", {}).update(processor_map)

    for name in _PROCESSOR_FILES:
        if (out / name).is_file():
            _update_json(out / name, merge_processor)


def export(
    model: transformers.PreTrainedModel | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    processor: Any = None,
    slug: str | None = None,
    card: CardFacts | None = None,
    overwrite: bool = False,
    eval_results: Iterable[Mapping[str, Any] | EvalResult] | None = None,
    card_vars: Mapping[str, Any] | None = None,
    auto_classes: Mapping[str, type | None] | None = None,
    pipeline_tag: str | None = None,
    model_name: str | None = None,
) -> Path:
    """Writes a Hub-ready folder: weights, config with `auto_map`, processor, flat remote code and model card.

    Args:
        model (`PreTrainedModel`, `str` or `os.PathLike`): the model, or a directory written by `save_pretrained`
            (loaded after `import clipzoo` registers the variants; its processor is loaded too when saved there).
        out_dir (`str` or `os.PathLike`): the folder to write; must be empty unless `overwrite=True`.
        processor (*optional*): a processor or image processor to save alongside (overrides the one in `model`'s
            directory).
        slug (`str`, *optional*): the variant (`"groupvit"`, ...); inferred from `model_type = "clipzoo_<slug>"`.
            Any other slug (e.g. `"backbone"` for a plain transformers CLIP) needs `card`.
        card (`CardFacts`, *optional*): card facts; by default those of the variant's row.
        overwrite (`bool`): replace an earlier export in a non-empty `out_dir`.
        eval_results (*optional*): measured numbers for the card's `model-index`: dicts with `task_type`,
            `dataset_type`, `dataset_name`, `dataset_split`, `metric_type`, `metric_name`, `metric_value` (see
            `to_eval_results`).
        card_vars (`Mapping[str, Any]`, *optional*): extra template variables: `repo_id`, `training_data`,
            `training_procedure`, `limitations`, `usage`, `language`, ...
        auto_classes (`Mapping[str, type]`, *optional*): Auto class name -> class to bundle as remote code; by
            default the variant row's classes, or the model's (and processor's) own classes.
        pipeline_tag (`str`, *optional*): by default the variant's, else `"zero-shot-image-classification"`.
        model_name (`str`, *optional*): the name in the card's `model-index`; default `"clipzoo-<slug>"`.

    Returns:
        `Path`: `out_dir`.

    Examples:

    ```python
    >>> from clipzoo.hub import export
    >>> export("outputs/groupvit", "exports/groupvit", eval_results=[{"task_type": "zero-shot-image-classification",
    ...     "dataset_type": "shapesworld", "dataset_name": "ShapesWorld", "dataset_split": "test",
    ...     "metric_type": "accuracy", "metric_name": "Top-1", "metric_value": 0.91}])
    ```
    """
    if isinstance(model, (str, os.PathLike)):
        model, saved_processor = _load_model_dir(Path(model))
        processor = processor if processor is not None else saved_processor
    if not isinstance(model, transformers.PreTrainedModel):
        raise TypeError(f"model must be a PreTrainedModel or a directory path, got {type(model).__name__}.")
    variant = _variant_for(model, slug, card)
    slug = slug or (variant.slug if variant is not None else None)
    facts = card or (variant.card if variant is not None else None)
    if slug is None or facts is None:
        raise ValueError(
            f"Cannot tell which card to write for model_type {model.config.model_type!r}: pass slug= for a clipzoo "
            "variant, or slug= and card=CardFacts(...) for any other model."
        )
    classes = dict(auto_classes) if auto_classes is not None else _auto_classes(model, processor, variant)
    remote_code_sources(classes)  # refuse unbundleable code before writing anything
    results = to_eval_results(eval_results or [])
    out = _prepare_out_dir(out_dir, overwrite)

    model.save_pretrained(out)
    if processor is not None:
        processor.save_pretrained(out)
    auto_map = collect_remote_code(classes, out)
    _merge_auto_map(out, auto_map)
    model_card = render_model_card(
        facts,
        slug=slug,
        pipeline_tag=pipeline_tag or (variant.pipeline_tag if variant else "zero-shot-image-classification"),
        eval_results=results,
        model_name=model_name,
        remote_code=bool(auto_map),
        card_vars=card_vars,
    )
    model_card.save(out / "README.md")
    logger.info(f"Exported {slug} to {out} ({len(auto_map)} auto_map entries).")
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------------------------------

_EVAL_REQUIRED = ("task_type", "dataset_type", "dataset_name", "metric_type", "metric_value")
_EVAL_FIELDS = frozenset(EvalResult.__dataclass_fields__)


def to_eval_results(rows: Iterable[Mapping[str, Any] | EvalResult]) -> list[EvalResult]:
    """Converts plain dicts to `huggingface_hub.EvalResult` (existing `EvalResult`s pass through).

    Args:
        rows: dicts with `task_type`, `dataset_type`, `dataset_name`, `metric_type`, `metric_value` and optionally
            `dataset_split`, `metric_name` or any other `EvalResult` field.
    """
    results = []
    for index, row in enumerate(rows):
        if isinstance(row, EvalResult):
            results.append(row)
            continue
        if not isinstance(row, Mapping):
            raise TypeError(f"eval_results[{index}] must be a dict or EvalResult, got {type(row).__name__}.")
        unknown = set(row) - _EVAL_FIELDS
        missing = [key for key in _EVAL_REQUIRED if key not in row]
        if unknown or missing:
            raise ValueError(
                f"eval_results[{index}] has unknown keys {sorted(unknown)} / lacks required keys {missing}; "
                f"expected {list(_EVAL_REQUIRED)} plus optional dataset_split, metric_name, ..."
            )
        results.append(EvalResult(**row))
    return results


def _split_usage(text: str) -> tuple[str, str]:
    """Splits a variant's `## Usage` section out of its card text, so it replaces the template's generic snippet."""
    lines = text.strip().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "## Usage"), None)
    if start is None:
        return text.strip(), ""
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    usage = "\n".join(lines[start + 1 : end]).strip()
    rest = "\n".join(lines[:start] + lines[end:]).strip()
    return rest, usage


def render_model_card(
    card: CardFacts,
    *,
    slug: str,
    pipeline_tag: str,
    eval_results: Iterable[Mapping[str, Any] | EvalResult] | None = None,
    model_name: str | None = None,
    remote_code: bool = True,
    card_vars: Mapping[str, Any] | None = None,
    template_path: str | os.PathLike | None = None,
) -> ModelCard:
    """Renders `model_cards/template.md` (plus `model_cards/<slug>.md` when present) for one model. Works offline.

    Args:
        card (`CardFacts`): paper facts.
        slug (`str`): the variant slug.
        pipeline_tag (`str`): Hub pipeline tag.
        eval_results (*optional*): see `to_eval_results`.
        model_name (`str`, *optional*): default `"clipzoo-<slug>"`.
        remote_code (`bool`): whether the folder ships remote code (adds the `custom_code` tag and
            `trust_remote_code=True` to the usage snippet).
        card_vars (`Mapping[str, Any]`, *optional*): extra or overriding template variables.
        template_path (`str`, *optional*): default `model_cards/template.md`.
    """
    results = to_eval_results(eval_results or [])
    model_name = model_name or f"clipzoo-{slug}"
    variables: dict[str, Any] = dict(card_vars or {})
    tags = ["clip", LIBRARY_NAME, slug, "vision-language"] + (["custom_code"] if remote_code else [])
    tags += [f"arxiv:{card.arxiv}"] if card.arxiv else []
    tags += [tag for tag in card.tags if tag not in tags]
    data = ModelCardData(
        library_name=LIBRARY_NAME,
        pipeline_tag=pipeline_tag,
        license=card.license or None,
        language=variables.pop("language", ["en"]),
        tags=tags,
        base_model=card.base_model,
        datasets=list(card.datasets) or None,
        metrics=list(card.metrics) or None,
        model_name=model_name,
        eval_results=results or None,
    )
    extra_path = MODEL_CARDS_DIR / f"{slug}.md"
    variant_text, variant_usage = _split_usage(extra_path.read_text(encoding="utf-8") if extra_path.is_file() else "")
    if variant_usage and "usage" not in variables:
        variables["usage"] = variant_usage
    template_vars = {
        "title": card.title,
        "slug": slug,
        "model_name": model_name,
        "summary": card.summary,
        "arxiv": card.arxiv,
        "official_repo": card.official_repo,
        "citation": card.citation.strip(),
        "notes": card.notes,
        "license": card.license,
        "base_model": card.base_model,
        "datasets": list(card.datasets),
        "pipeline_tag": pipeline_tag,
        "remote_code": remote_code,
        "repo_id": f"<namespace>/{model_name}",
        "eval_results": results,
        "variant_text": variant_text,
        **variables,
    }
    template = Path(template_path) if template_path is not None else MODEL_CARDS_DIR / "template.md"
    return ModelCard.from_template(data, template_path=str(template), **template_vars)


# ---------------------------------------------------------------------------------------------------------------------
# Upload
# ---------------------------------------------------------------------------------------------------------------------


def _offline_reason() -> str | None:
    for name in _OFFLINE_ENV_VARS:
        if os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return f"{name}={os.environ[name]}"
    if hf_constants.HF_HUB_OFFLINE:
        return "huggingface_hub.constants.HF_HUB_OFFLINE is True"
    return None


def _offline_error(reason: str) -> RuntimeError:
    return RuntimeError(
        f"Cannot push to the Hugging Face Hub: offline mode is on ({reason}). Unset HF_HUB_OFFLINE and "
        "TRANSFORMERS_OFFLINE (or set them to 0) in a shell with network access, log in with `hf auth login` or pass "
        "token=..., and retry."
    )


def push(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload clipzoo model",
    revision: str | None = None,
) -> Any:
    """Creates `repo_id` on the Hub if needed and uploads an exported folder to it.

    The model card is not validated online (that would be one more network call); `export` renders it offline.

    Args:
        folder (`str` or `os.PathLike`): a folder written by `export`.
        repo_id (`str`): `"namespace/name"`.
        token (`str`, *optional*): Hub token; by default the logged-in one.
        private (`bool`): create the repository as private.
        commit_message (`str`): the upload's commit message.
        revision (`str`, *optional*): branch to upload to.

    Returns:
        The `huggingface_hub.CommitInfo` of the upload.

    Raises:
        `RuntimeError`: at once when offline mode is on, or with a clear message when the Hub cannot be reached or
        refuses the upload.
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} has no config.json; run `clipzoo export` (clipzoo.hub.export) first.")
    reason = _offline_reason()
    if reason is not None:
        raise _offline_error(reason)
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model")
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            commit_message=commit_message,
            repo_type="model",
            revision=revision,
        )
    except OfflineModeIsEnabled as err:
        raise _offline_error(str(err)) from err
    except HfHubHTTPError as err:
        raise RuntimeError(
            f"The Hugging Face Hub refused the upload to {repo_id!r}: {err}. Check the repo id and that your token "
            "has write access (`hf auth login`)."
        ) from err
    except (_TransportHTTPError, OSError) as err:
        raise RuntimeError(
            f"Could not reach the Hugging Face Hub to upload {folder} to {repo_id!r} ({type(err).__name__}: {err}). "
            "Check the network connection (or HF_ENDPOINT) and retry."
        ) from err
