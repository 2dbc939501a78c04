"""Test-wide settings: offline, a private HF_HOME, and a small CPU thread budget."""

import os
import tempfile


_HF_HOME = tempfile.mkdtemp(prefix="clipzoo-hf-home-")
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_EVALUATE_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": _HF_HOME,
    "HF_DATASETS_CACHE": os.path.join(_HF_HOME, "datasets"),
    "CLIPZOO_CACHE": os.path.join(_HF_HOME, "clipzoo"),
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ[_key] = _value
