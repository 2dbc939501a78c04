"""CLIP-FSAR training, evaluation and single-video classification (`clipzoo train|evaluate clip_fsar`,
`clipzoo classify-video`).

Training follows the official `train_epoch` (research §2.6): one episode per forward, gradients accumulated to 16
episodes per optimiser step (official: 4 GPUs x `BATCH_SIZE_PER_TASK` 4), Adam with *coupled* L2 weight decay 1e-3
(the `OPTIMIZER.WEIGHT_DECAY` the official code actually reads; the configs' `SOLVER.WEIGHT_DECAY` 5e-5/5e-4 is never
read), no decay on parameters whose name contains "bn" or "norm" (as officially: this exempts the head's LayerNorm but
decays CLIP-ViT's `ln_*`; transformers names them `layer_norm*`/`*layrnorm`, so here every LayerNorm is exempt), and a
step schedule: linear warm-up from `warmup_start_lr`, then x0.1 and x0.01 at `lr_decay_steps`. The official loss is
divided by `TRAIN.BATCH_SIZE` (4) on each GPU and summed over accumulation; the Trainer's mean over accumulated
episodes gives the same gradient up to that constant (Adam is scale-invariant).

Model selection uses the validation episodes (`metric_for_best_model="accuracy"`); the official code selects the
best-ever accuracy on the *test* split.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import TrainingArguments
from transformers.utils import logging

from clipzoo.configuration.configuration_clip_fsar import ClipzooCLIPFSARConfig
from clipzoo.modeling.modeling_clip_fsar import ClipzooCLIPFSARModel
from clipzoo.processing.processing_clip_fsar import ClipzooCLIPFSARProcessor
from clipzoo.processing.video_processing import ClipzooVideoProcessor
from clipzoo.training.episodes import EpisodicVideoDataset, episode_collator


logger = logging.get_logger(__name__)

__all__ = [
    "CLIPFSARDataArguments",
    "CLIPFSARModelArguments",
    "CLIPFSAROptimArguments",
    "build_episodes",
    "build_model",
    "classify_video",
    "evaluate",
    "evaluate_episodes",
    "train",
]

DATA_FILE = "clip_fsar_data.json"


@dataclasses.dataclass
class CLIPFSARModelArguments:
    """Model section of a CLIP-FSAR recipe (see `ClipzooCLIPFSARConfig` for the meaning of each field)."""

    backbone: str | None = dataclasses.field(
        default=None, metadata={"help": "HF CLIP id/folder; default: the cached ShapesWorld backbone"}
    )
    num_attention_heads: int = 8
    transformer_depth: int = 1
    ffn_dim: int = 2048
    attention_dropout: float = 0.2
    ffn_dropout: float = 0.05
    otam_lambda: float = 0.5
    otam_bidirectional: bool = True
    otam_compile: bool = dataclasses.field(
        default=False, metadata={"help": "torch.compile OTAM's row recurrence (runtime only, not saved)"}
    )
    video_text_loss_weight: float = 3.0
    use_prototype_modulation: bool = True
    metric: str = "otam"
    merge_support_before: bool = True
    prompt: str = "a photo of {}"


@dataclasses.dataclass
class CLIPFSARDataArguments:
    """Data section: ShapesWorld-Actions (default) or official-format split files with videos on disk."""

    dataset: str = dataclasses.field(default="shapesworld", metadata={"help": "'shapesworld' or 'split_files'"})
    num_frames: int = 8
    shortest_edge: int = 64
    crop_size: int = 64
    eval_sampling: str = "center"
    n_way: int = 5
    k_shot: int = 1
    q_query: int = 5
    eval_k_shot: int = 1
    eval_q_query: int = 1
    train_episodes: int = 0  # 0: max_steps x gradient_accumulation_steps
    val_episodes: int = 200
    test_episodes: int = 10_000
    seed: int = 0
    # ShapesWorld-Actions
    videos_per_class: int = 20
    image_size: int = 64
    num_distractors: int = 0
    # split files: class-name files list one name per line in class-id order
    video_root: str | None = None
    train_split: str | None = None
    val_split: str | None = None
    test_split: str | None = None
    train_class_names: str | None = None
    val_class_names: str | None = None
    test_class_names: str | None = None


def _processor_for(data_args: CLIPFSARDataArguments) -> ClipzooVideoProcessor:
    return ClipzooVideoProcessor(
        num_frames=data_args.num_frames,
        shortest_edge=data_args.shortest_edge,
        crop_size=data_args.crop_size,
        eval_sampling=data_args.eval_sampling,
    )


def _names(path: str | None, what: str) -> list[str]:
    if path is None:
        raise ValueError(f"dataset='split_files' needs {what}.")
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def build_episodes(data_args: CLIPFSARDataArguments, split: str, num_episodes: int, **kwargs) -> EpisodicVideoDataset:
    """Episodes of `split` ("train", "val", "test"; ShapesWorld also "seen_test"). ShapesWorld-Actions has no
    class-disjoint validation split: train and val use the seen classes (different videos), test the held-out classes,
    and "seen_test" new videos of the seen classes (a diagnostic, not the few-shot protocol)."""
    processor = _processor_for(data_args)
    training = split == "train"
    k_shot = data_args.k_shot if training else data_args.eval_k_shot
    q_query = data_args.q_query if training else data_args.eval_q_query
    if split not in ("train", "val", "test", "seen_test"):
        raise ValueError(f"split must be 'train', 'val', 'test' or 'seen_test'; got {split!r}.")
    seed = data_args.seed + {"train": 0, "val": 1, "test": 2, "seen_test": 3}[split]
    common = {"n_way": data_args.n_way, "k_shot": k_shot, "q_query": q_query, "num_episodes": num_episodes,
              "seed": seed, "training": training, **kwargs}  # fmt: skip
    if data_args.dataset == "shapesworld":
        return EpisodicVideoDataset.from_shapesworld(
            processor,
            split="heldout" if split == "test" else "seen",
            videos_per_class=data_args.videos_per_class,
            data_seed=seed,
            image_size=data_args.image_size,
            num_distractors=data_args.num_distractors,
            **common,
        )
    if split == "seen_test":
        raise ValueError("split='seen_test' exists only for ShapesWorld-Actions.")
    if data_args.dataset != "split_files":
        raise ValueError(f"dataset must be 'shapesworld' or 'split_files'; got {data_args.dataset!r}.")
    split_file = getattr(data_args, f"{split}_split")
    names = _names(getattr(data_args, f"{split}_class_names"), f"{split}_class_names")
    if split_file is None or data_args.video_root is None:
        raise ValueError(f"dataset='split_files' needs video_root and {split}_split.")
    return EpisodicVideoDataset.from_split_file(split_file, data_args.video_root, names, processor, **common)


def build_model(
    model_args: CLIPFSARModelArguments, class_names: Sequence[str], num_frames: int = 8
) -> tuple[ClipzooCLIPFSARModel, Any]:
    """CLIP-FSAR initialised from a pretrained HF CLIP (vision + frozen text tower), with the training classes' text
    embeddings stored in the model. Returns the model and the CLIP tokenizer."""
    from clipzoo.backbone import ensure_backbone, load_backbone

    clip, clip_processor = load_backbone(model_args.backbone or ensure_backbone())
    runtime_only = ("backbone", "otam_compile")
    fields = {
        f.name: getattr(model_args, f.name) for f in dataclasses.fields(model_args) if f.name not in runtime_only
    }
    config = ClipzooCLIPFSARConfig(
        vision_config={**clip.config.vision_config.to_dict(), "projection_dim": clip.config.projection_dim},
        text_config={**clip.config.text_config.to_dict(), "projection_dim": clip.config.projection_dim},
        projection_dim=clip.config.projection_dim,
        num_frames=num_frames,
        class_names=list(class_names),
        **fields,
    )
    model = ClipzooCLIPFSARModel(config)
    model.otam_compile = model_args.otam_compile
    state = clip.state_dict()
    model.vision_model.load_state_dict(
        {k: v for k, v in state.items() if k.startswith(("vision_model.", "visual_projection."))}
    )
    model.text_model.load_state_dict(
        {k: v for k, v in state.items() if k.startswith(("text_model.", "text_projection."))}
    )
    tokenizer = clip_processor.tokenizer
    model.set_class_text_embeds(class_table(model, tokenizer, class_names), class_names)
    return model, tokenizer


def class_table(model: ClipzooCLIPFSARModel, tokenizer, class_names: Sequence[str]) -> torch.Tensor:
    """Text embeddings of `class_names` with the model's prompt (e.g. the val/test classes)."""
    max_length = model.config.text_config.max_position_embeddings
    prompts = [model.config.prompt.format(n) for n in class_names]
    tokens = tokenizer(prompts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    device = model.scale.device
    return model.get_text_features(tokens["input_ids"].to(device), tokens["attention_mask"].to(device))


class _WithClassTable(torch.utils.data.Dataset):
    """Adds the episode classes' text table to every item (val/test classes are not the training classes)."""

    def __init__(self, dataset: EpisodicVideoDataset, table: torch.Tensor):
        self.dataset, self.table = dataset, table.detach().cpu()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {**self.dataset[index], "class_text_embeds": self.table}


def official_optimizer(model: torch.nn.Module, learning_rate: float, weight_decay: float = 1e-3) -> torch.optim.Adam:
    """Adam with coupled L2 `weight_decay`, none on parameters named like norms (see the module docstring)."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            exempt = "bn" in name or "norm" in name or "layrnorm" in name
            (no_decay if exempt else decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.Adam(groups, lr=learning_rate, betas=(0.9, 0.999))


def step_schedule(optimizer, warmup_steps: int, warmup_start_factor: float, decay_steps: Sequence[int]):
    """Linear warm-up from `warmup_start_factor` x lr, then x0.1 after each of `decay_steps` (official steps policy)."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return warmup_start_factor + (1 - warmup_start_factor) * step / warmup_steps
        return 0.1 ** sum(step >= s for s in decay_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _episode_accuracy(query_count: int):
    from clipzoo.metrics.few_shot_accuracy import FewShotEpisodeAccuracy

    def compute(eval_pred) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        logits = logits[0] if isinstance(logits, tuple) else logits
        predictions = np.asarray(logits).argmax(-1).reshape(-1, query_count)
        references = np.asarray(labels).reshape(-1, query_count)
        result = FewShotEpisodeAccuracy().compute(predictions=predictions.tolist(), references=references.tolist())
        return {"accuracy": result["accuracy"], "ci95": result["ci95"]}

    return compute


@dataclasses.dataclass
class CLIPFSAROptimArguments:
    """Optimiser section: the official Adam + coupled L2 and step schedule (`official: true`), or the Trainer's
    AdamW + `lr_scheduler_type` of the training section (`official: false`)."""

    official: bool = True
    weight_decay: float = 1e-3
    warmup_start_factor: float = 0.2
    lr_decay_steps: list[int] = dataclasses.field(default_factory=list)


def _load_args(recipe, output_dir, overrides) -> dict[str, Any]:
    from clipzoo.training.recipes import load_recipe

    overrides = {k: dict(v) for k, v in (overrides or {}).items()}
    overrides.setdefault("training", {})["output_dir"] = str(output_dir)
    sections = {"model": CLIPFSARModelArguments, "data": CLIPFSARDataArguments, "optim": CLIPFSAROptimArguments,
                "training": TrainingArguments}  # fmt: skip
    return load_recipe(recipe, sections, overrides)


def train(
    recipe: str | Path, output_dir: str | Path, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> Path:
    """`clipzoo train clip_fsar`: episodic training with the `ClipzooTrainer`; saves model, processor and data args."""
    from clipzoo.training.trainer import ClipzooTrainer

    args = _load_args(recipe, output_dir, overrides)
    model_args, data_args, optim, training = args["model"], args["data"], args["optim"], args["training"]
    torch.manual_seed(training.seed)  # the new layers are initialised before the Trainer seeds anything
    training.label_names = ["labels"]  # `support_labels` is an input, not a label
    if training.per_device_train_batch_size != 1 or training.per_device_eval_batch_size != 1:
        raise ValueError("CLIP-FSAR batches hold one episode: set per_device_{train,eval}_batch_size to 1.")
    num_train = data_args.train_episodes or training.max_steps * training.gradient_accumulation_steps
    train_set = build_episodes(data_args, "train", num_train)
    val_set = build_episodes(data_args, "val", data_args.val_episodes)
    model, tokenizer = build_model(model_args, train_set.class_names, data_args.num_frames)
    val_data = _WithClassTable(val_set, class_table(model, tokenizer, val_set.class_names))
    optimizers = (None, None)
    if optim.official:
        optimizer = official_optimizer(model, training.learning_rate, optim.weight_decay)
        warmup = training.warmup_steps if isinstance(training.warmup_steps, int) else 0
        optimizers = (optimizer, step_schedule(optimizer, warmup, optim.warmup_start_factor, optim.lr_decay_steps))
    trainer = ClipzooTrainer(
        model=model,
        args=training,
        train_dataset=train_set,
        eval_dataset=val_data if training.eval_strategy != "no" else None,
        data_collator=episode_collator,
        compute_metrics=_episode_accuracy(data_args.n_way * data_args.eval_q_query),
        optimizers=optimizers,
    )
    trainer.train(resume_from_checkpoint=training.resume_from_checkpoint)
    output_dir = Path(output_dir)
    trainer.save_model(output_dir)
    processor = ClipzooCLIPFSARProcessor(
        image_processor=_processor_for(data_args), tokenizer=tokenizer, prompt=model_args.prompt
    )
    processor.save_pretrained(output_dir)
    (output_dir / DATA_FILE).write_text(json.dumps(dataclasses.asdict(data_args), indent=2))
    return output_dir


@torch.no_grad()
def evaluate_episodes(
    model: ClipzooCLIPFSARModel, dataset: EpisodicVideoDataset, table: torch.Tensor, batch_size: int = 64
) -> dict[str, Any]:
    """Mean accuracy ± 95% CI over all episodes of `dataset`.

    With deterministic frames (evaluation, `eval_sampling="center"`), every video's frame features, and its modulated
    query features (queries are modulated without text), are computed once and reused by all episodes (the backbone
    sees each frame alone and the Transformer each video alone, so this equals the per-episode forward); with random
    test sampling each episode runs the full forward.
    """
    from clipzoo.metrics.few_shot_accuracy import FewShotEpisodeAccuracy

    model.eval()
    device = model.scale.device
    table = table.to(device)
    predictions, references = [], []
    cached = not dataset.training and dataset.processor.eval_sampling == "center"
    if cached:
        rng = np.random.default_rng(0)
        clips = [dataset.processor.process_video(dataset._read(v), False, rng) for v in dataset.videos]
        features = torch.cat(
            [model.get_video_features(torch.from_numpy(np.stack(clips[i : i + batch_size])).to(device))
             for i in range(0, len(clips), batch_size)]
        )  # fmt: skip
        modulate = model.config.use_prototype_modulation
        query_features = model.temporal_transformer(features) if modulate else features
    for index in range(len(dataset)):
        episode = dataset.episode(index)
        if cached:
            support_labels = torch.tensor(episode.support_labels, device=device)
            text = table[torch.tensor(episode.support_class_ids, device=device)]
            logits, _, _ = model.episode_logits(
                query_features[list(episode.query_indices)], features[list(episode.support_indices)], support_labels,
                text, len(episode.classes), query_modulated=True,
            )  # fmt: skip
        else:
            item = {k: v.to(device) for k, v in dataset[index].items()}
            logits = model(**item, class_text_embeds=table).logits_per_video
        predictions.append(logits.argmax(-1).tolist())
        references.append(list(episode.query_labels))
    result = FewShotEpisodeAccuracy().compute(predictions=predictions, references=references)
    return {"accuracy": result["accuracy"], "ci95": result["ci95"], "num_episodes": result["num_episodes"]}


def evaluate(
    model_dir: str | Path, num_samples: int | None = None, k_shots: Sequence[int] | None = None, split: str = "test"
) -> dict[str, Any]:
    """`clipzoo evaluate clip_fsar`: accuracy ± 95% CI over seeded test episodes (default 10,000; `num_samples`
    episodes when given), for each K in `k_shots` (default: the recipe's `eval_k_shot`). `split="seen_test"` scores
    new videos of the training classes (ShapesWorld only)."""
    import clipzoo  # noqa: F401  (registers the processor classes)

    model_dir = Path(model_dir)
    model = ClipzooCLIPFSARModel.from_pretrained(model_dir).eval()
    processor = ClipzooCLIPFSARProcessor.from_pretrained(model_dir)
    data_file = model_dir / DATA_FILE
    data_args = (
        CLIPFSARDataArguments(**json.loads(data_file.read_text())) if data_file.is_file() else CLIPFSARDataArguments()
    )
    episodes = num_samples or data_args.test_episodes
    results: dict[str, Any] = {"n_way": data_args.n_way, "num_episodes": episodes, "protocol": (
        f"{data_args.n_way}-way, {data_args.eval_q_query} query/class, seeded test episodes, frames: "
        f"{data_args.eval_sampling} of {data_args.num_frames} segments; model selected on validation episodes")}  # fmt: skip
    for k_shot in k_shots or [data_args.eval_k_shot]:
        test_args = dataclasses.replace(data_args, eval_k_shot=k_shot)
        dataset = build_episodes(test_args, split, episodes)
        table = class_table(model, processor.tokenizer, dataset.class_names)
        result = evaluate_episodes(model, dataset, table)
        results[f"{k_shot}-shot"] = {"accuracy": result["accuracy"], "ci95": result["ci95"]}
        if dataset.skipped.count:
            results[f"{k_shot}-shot"]["skipped_videos"] = dataset.skipped.count
    return results


@torch.no_grad()
def classify_video(video: str | Path, support_dir: str | Path, model_dir: str | Path, top_k: int = 5) -> dict:
    """`clipzoo classify-video VIDEO --support DIR --model DIR`: classifies one video against a labelled support set,
    `DIR/<class name>/<video files>`. Unreadable support files are skipped and counted."""
    from clipzoo.data.folders import SkippedSamples
    from clipzoo.data.video import VIDEO_EXTENSIONS, decode_video

    model = ClipzooCLIPFSARModel.from_pretrained(model_dir).eval()
    processor = ClipzooCLIPFSARProcessor.from_pretrained(model_dir)
    support_videos, support_labels, skipped = [], [], SkippedSamples()
    for class_dir in sorted(p for p in Path(support_dir).iterdir() if p.is_dir()):
        for path in sorted(p for p in class_dir.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS):
            try:
                support_videos.append(decode_video(path))
                support_labels.append(class_dir.name)
            except ValueError as error:
                skipped.add(str(path), str(error))
    if len(set(support_labels)) < 2:
        raise ValueError(f"{support_dir} needs readable videos of at least 2 classes in <class name>/ sub-folders.")
    inputs = processor(videos=[decode_video(video)], support_videos=support_videos, support_labels=support_labels)
    names = inputs.pop("class_names")
    probabilities = model(**inputs).logits_per_video.softmax(-1)[0]
    order = probabilities.argsort(descending=True)[:top_k]
    return {
        "video": str(video),
        "label": names[int(order[0])],
        "scores": {names[int(i)]: float(probabilities[i]) for i in order},
        "skipped_support_videos": skipped.count,
    }
