"""Recipes: YAML sections parsed into dataclasses; typos are errors, never silent defaults."""

from dataclasses import dataclass

import pytest
from transformers import TrainingArguments

from clipzoo.backbone import BackboneDataArguments, BackboneModelArguments
from clipzoo.training.recipes import available_recipes, load_recipe


SECTIONS = {"model": BackboneModelArguments, "data": BackboneDataArguments, "training": TrainingArguments}


def test_shipped_backbone_recipe_parses(tmp_path):
    args = load_recipe("backbone_shapesworld", SECTIONS, {"training": {"output_dir": str(tmp_path)}})
    assert "backbone_shapesworld" in available_recipes()
    assert args["model"].patch_size == 8
    assert args["training"].remove_unused_columns is False
    assert args["training"].output_dir == str(tmp_path)


def test_every_shipped_recipe_is_valid_yaml_with_known_sections():
    import yaml

    from clipzoo.training.recipes import RECIPE_DIR

    for path in RECIPE_DIR.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert isinstance(data, dict) and data, path.name
        assert all(isinstance(section, dict) for section in data.values()), path.name


def test_unknown_recipe_names_the_shipped_ones():
    with pytest.raises(ValueError, match="Unknown recipe 'nope'.*backbone_shapesworld"):
        load_recipe("nope", SECTIONS)


def test_unknown_field_is_named(tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("model:\n  hiden_size: 12\n")
    with pytest.raises(ValueError, match=r"section 'model': unknown field\(s\) \['hiden_size'\]"):
        load_recipe(recipe, SECTIONS, {"training": {"output_dir": str(tmp_path)}})


def test_unknown_training_field_is_named(tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("training:\n  max_step: 3\n")
    with pytest.raises(ValueError, match="max_step"):
        load_recipe(recipe, SECTIONS, {"training": {"output_dir": str(tmp_path)}})


def test_unknown_section_is_named(tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("modle:\n  hidden_size: 12\n")
    with pytest.raises(ValueError, match=r"unknown section\(s\) \['modle'\]"):
        load_recipe(recipe, SECTIONS)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        load_recipe(tmp_path / "missing.yaml", SECTIONS)


def test_values_are_typed(tmp_path):
    @dataclass
    class Args:
        steps: int = 1
        classes: list[int] | None = None

    recipe = tmp_path / "ok.yaml"
    recipe.write_text("model:\n  steps: 7\n  classes: [1, 3]\n")
    args = load_recipe(recipe, {"model": Args})
    assert args["model"].steps == 7 and args["model"].classes == [1, 3]
