"""Recipes: YAML files parsed into dataclass arguments with `HfArgumentParser`.

A recipe has one mapping per section, each parsed into that section's dataclass:

```yaml
model:      # the variant's model arguments
  hidden_size: 64
data:       # the variant's data arguments
  num_train: 4000
training:   # transformers.TrainingArguments (output_dir comes from the command line)
  max_steps: 600
  learning_rate: 1.0e-3
```

Unknown sections and unknown fields are errors that name the recipe, the section and the field: a typo in a recipe must
never silently fall back to a default.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml
from transformers import HfArgumentParser, TrainingArguments


__all__ = ["RECIPE_DIR", "available_recipes", "load_recipe", "recipe_path"]

RECIPE_DIR = Path(__file__).parent / "recipes"

# Settings every clipzoo run needs whatever the recipe says: collators consume raw columns, nothing is reported to
# online services, and the data loader runs in-process (fork-safe on 2-core CI machines).
TRAINING_DEFAULTS: dict[str, Any] = {
    "remove_unused_columns": False,
    "report_to": "none",
    "dataloader_num_workers": 0,
}


def _cpu_only_multiprocess() -> bool:
    import torch

    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()


def available_recipes() -> list[str]:
    """Names of the recipes shipped in `clipzoo/training/recipes/`."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def recipe_path(name_or_path: str | Path) -> Path:
    """Resolves a recipe name (`"backbone_shapesworld"`) or a YAML file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"Recipe file {str(path)!r} does not exist.")
        return path
    candidate = RECIPE_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise ValueError(f"Unknown recipe {str(name_or_path)!r}. Shipped recipes: {', '.join(available_recipes())}.")
    return candidate


def _parse_section(name: str, section: str, values: dict[str, Any], cls: type) -> Any:
    known = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"Recipe {name!r}, section {section!r}: unknown field(s) {unknown}. "
            f"{cls.__name__} accepts: {', '.join(sorted(known))}."
        )
    (parsed,) = HfArgumentParser([cls]).parse_dict(values, allow_extra_keys=False)
    return parsed


def load_recipe(
    name_or_path: str | Path,
    sections: dict[str, type],
    overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Loads a recipe into one dataclass instance per section.

    Args:
        name_or_path (`str` or `Path`): a shipped recipe name or a YAML file.
        sections (`dict[str, type]`): section name -> dataclass, e.g.
            `{"model": BackboneModelArguments, "data": BackboneDataArguments, "training": TrainingArguments}`.
        overrides (`dict[str, dict]`, *optional*): values that replace the file's, per section (e.g. the command
            line's `output_dir` for `training`).

    Returns:
        `dict[str, Any]`: section name -> parsed dataclass. A missing section gets its dataclass defaults.
    """
    path = recipe_path(name_or_path)
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"Recipe {str(path)!r} must be a mapping of sections, got {type(raw).__name__}.")
    unknown_sections = sorted(set(raw) - set(sections))
    if unknown_sections:
        raise ValueError(
            f"Recipe {path.stem!r}: unknown section(s) {unknown_sections}; expected {', '.join(sections)}."
        )
    parsed = {}
    for section, cls in sections.items():
        values = dict(raw.get(section) or {})
        if isinstance(cls, type) and issubclass(cls, TrainingArguments):
            values = {**TRAINING_DEFAULTS, **values}
            if _cpu_only_multiprocess():
                # Under torchrun/accelerate on a machine without GPUs, Accelerate only forms the process group
                # (gloo, MULTI_CPU) when asked for the CPU explicitly; otherwise every process trains alone.
                values["use_cpu"] = True
        values.update((overrides or {}).get(section, {}))
        parsed[section] = _parse_section(path.stem, section, values, cls)
    return parsed
