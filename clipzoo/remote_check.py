"""Load an exported folder in a fresh process where `import clipzoo` is impossible, and run it.

This is how a Hub user without clipzoo installed meets a clipzoo checkpoint: `AutoModel.from_pretrained(folder,
trust_remote_code=True)` must work from the flat remote-code bundle alone. A meta-path blocker makes `clipzoo`
unimportable even when it is pip-installed (otherwise transformers would silently use the registered local classes).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


__all__ = ["remote_code_outputs"]

_SCRIPT = textwrap.dedent(
    """
    import importlib.abc, sys

    class _Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "clipzoo" or name.startswith("clipzoo."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)")

    sys.meta_path.insert(0, _Block())
    import torch, transformers
    from safetensors.torch import load_file, save_file

    folder, inputs_path, out_path, auto_name, output_keys = sys.argv[1:6]
    model = getattr(transformers, auto_name).from_pretrained(folder, trust_remote_code=True).eval()
    assert not type(model).__module__.startswith("clipzoo"), type(model).__module__
    inputs = load_file(inputs_path)
    with torch.no_grad():
        outputs = model(**inputs)
    keys = [k for k in output_keys.split(",") if k]
    save_file({k: outputs[k].contiguous() for k in keys}, out_path)
    print(type(model).__module__ + "." + type(model).__name__)
    """
)


def remote_code_outputs(
    folder: str | Path,
    inputs: dict[str, torch.Tensor],
    output_keys: list[str],
    auto_class: str = "AutoModel",
    timeout: float = 300.0,
) -> tuple[dict[str, torch.Tensor], str]:
    """Runs `auto_class.from_pretrained(folder, trust_remote_code=True)` on `inputs` in a clean subprocess.

    Args:
        folder (`str` or `Path`): an exported folder (see `clipzoo.hub.export`).
        inputs (`dict[str, torch.Tensor]`): keyword tensors for the model's forward.
        output_keys (`list[str]`): output fields to bring back (e.g. `["logits_per_image"]`).
        auto_class (`str`, *optional*, defaults to `"AutoModel"`): the transformers Auto class to load with.
        timeout (`float`, *optional*): seconds before the subprocess is killed.

    Returns:
        `(outputs, class_path)`: the requested output tensors and the loaded class's `module.name` (never a clipzoo
        module).
    """
    with tempfile.TemporaryDirectory(prefix="clipzoo-remote-") as tmp:
        inputs_path, out_path = os.path.join(tmp, "inputs.safetensors"), os.path.join(tmp, "out.safetensors")
        save_file({k: v.contiguous() for k, v in inputs.items()}, inputs_path)
        env = {**os.environ, "HF_HOME": os.path.join(tmp, "hf_home"), "HF_HUB_OFFLINE": "1"}
        env.pop("PYTHONPATH", None)
        proc = subprocess.run(
            # The child runs in a scratch folder (so the checkout's clipzoo/ is not importable): paths must be absolute.
            [sys.executable, "-c", _SCRIPT, str(Path(folder).resolve()), inputs_path, out_path, auto_class]
            + [",".join(output_keys)],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"Loading {folder} with trust_remote_code failed:\n{proc.stderr[-4000:]}")
        return load_file(out_path), proc.stdout.strip().splitlines()[-1]
