"""DESIGN.md §2: the layering rules, enforced with an `ast` walk over every module of the package."""

import ast
import sys
from pathlib import Path

import pytest


PACKAGE = Path(__file__).resolve().parents[1] / "clipzoo"
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
SHARED_MODELING = {"layers", "outputs", "losses", "alignment"}
# Layer -> third-party roots it may import (anywhere in the file, function bodies included).
THIRD_PARTY = {
    "configuration": {"transformers"},
    "processing": {"transformers", "huggingface_hub", "PIL", "numpy", "torch", "tokenizers"},
    "modeling": {"transformers", "torch", "numpy"},
}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module name, line) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package_parts = ["clipzoo", *path.relative_to(PACKAGE).parent.parts]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.append((name, node.lineno))
            # `from clipzoo.modeling import losses` imports the module clipzoo.modeling.losses
            if name and name.startswith("clipzoo") and name.count(".") < 2:
                found += [(f"{name}.{alias.name}", node.lineno) for alias in node.names if alias.name != "*"]
    return found


def _layer(path: Path) -> str | None:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else None


def _violations(path: Path) -> list[str]:
    layer, stem = _layer(path), path.stem
    problems = []
    for name, line in _imports(path):
        root = name.split(".")[0]
        where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
        if name == "clipzoo.cli" and path.name != "cli.py":
            problems.append(f"{where} (nothing imports cli)")
        if layer not in THIRD_PARTY or stem == "__init__":
            continue
        if root == "clipzoo":
            parts = name.split(".")
            if len(parts) < 3:
                problems.append(f"{where} (import concrete modules, never a package __init__)")
                continue
            target_layer = parts[1]
            allowed = {"configuration": set(), "processing": {"configuration", "processing"}}.get(layer)
            if layer == "modeling":
                if target_layer == "configuration":
                    continue
                if target_layer != "modeling":
                    problems.append(f"{where} (modeling imports only its config and shared modeling blocks)")
                elif parts[2].startswith("modeling_") and len(parts) == 3 and parts[2] != stem:
                    problems.append(f"{where} (modeling_<a> never imports modeling_<b>)")
            elif target_layer not in allowed:
                problems.append(f"{where} ({layer} may not import clipzoo.{target_layer})")
        elif root not in STDLIB and root not in THIRD_PARTY[layer]:
            problems.append(f"{where} ({layer} may import only {sorted(THIRD_PARTY[layer])} and the stdlib)")
    return problems


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_respects_layering(path):
    assert _violations(path) == []


def test_checker_catches_violations(tmp_path, monkeypatch):
    fake = tmp_path / "clipzoo"
    (fake / "modeling").mkdir(parents=True)
    bad = fake / "modeling" / "modeling_a.py"
    bad.write_text(
        "import peft\nfrom clipzoo.training.trainer import X\nfrom clipzoo.modeling.modeling_b import Y\n"
        "from clipzoo.configuration import Z\nfrom clipzoo.modeling.losses import clip_loss\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    problems = _violations(bad)
    assert len(problems) == 4, problems
    assert any("peft" in p for p in problems) and any("modeling_b" in p for p in problems)


def test_module_basenames_are_unique():
    """The Hub exporter copies modules flat, so two files may not share a basename (package __init__s aside)."""
    names = [p.name for p in _modules() if p.name != "__init__.py"]
    assert sorted({n for n in names if names.count(n) > 1}) == []
