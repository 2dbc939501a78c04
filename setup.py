"""Packaging for clipzoo: CLIP upgrades as Hugging Face transformers models."""

from setuptools import find_packages, setup


INSTALL_REQUIRES = [
    # torch is pinned by the Makefile to the CPU wheel on disk (`pip install torch==2.13.0`); this range only guards
    # against an incompatible release and is satisfied by 2.13.0, so pip installs nothing more.
    "torch>=2.4,<2.14",
    "transformers>=5.24,<5.25",
    # transformers 5.24 wants peft>=0.22 for `model.add_adapter`; 0.21.x is the newest reachable, so clipzoo uses
    # peft's own API (get_peft_model / PeftModel) and never `add_adapter`.
    "peft>=0.21,<0.22",
    "huggingface_hub>=2.4,<3",
    "safetensors>=0.5",
    "numpy>=1.26",
    "pillow>=10",
    "pyyaml>=6",
    "tqdm>=4.66",
]

EXTRAS = {
    "train": ["accelerate>=1.15,<2", "datasets>=5.2,<6", "evaluate>=0.4.6,<0.5"],
    "video": ["av>=14"],
    "diva": ["diffusers>=0.42,<0.43"],
    "dev": ["pytest>=9,<10", "ruff==0.17.6"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})

setup(
    name="clipzoo",
    version="0.1.0.dev0",
    description="CLIP upgrades (GroupViT, FFF, DreamLIP, DIVA, CLIP-FSAR, MA-FSAR, APE) as transformers models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["clipzoo", "clipzoo.*"]),
    package_data={"clipzoo": ["training/recipes/*.yaml", "../model_cards/*.md"]},
    include_package_data=True,
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["clipzoo=clipzoo.cli:main"]},
)
