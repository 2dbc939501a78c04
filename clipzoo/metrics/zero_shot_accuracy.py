"""Zero-shot classification accuracy (top-1 and top-k) as an `evaluate.Metric`.

Self-contained (numpy, datasets, evaluate only; one import per line) so that `evaluate.load(<this file>)` works offline.
"""

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np


__all__ = ["ZeroShotAccuracy"]

_DESCRIPTION = """
Top-1 and top-k accuracy of zero-shot classification. Predictions are either one score vector per sample (e.g. a row
of `logits_per_image` against the class prompts) or one predicted class id per sample; top-k (k > 1) needs scores.

Ties are broken by class index, like `numpy.argmax` and a stable descending sort: the rank of the true class is the
number of classes with a strictly higher score plus the number of lower-indexed classes with an equal score.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]` or `list[int]`): per-sample score vectors (all of the same length, the number of
        classes) or predicted class ids.
    references (`list[int]`): true class ids.
    k (`int` or `list[int]`, *optional*): extra top-k accuracies to report, each in `[1, num_classes]`.
Returns:
    `dict`: `"accuracy"` (top-1, a float in [0, 1]) and one `f"top{k}_accuracy"` per requested k.
Examples:
    >>> metric = ZeroShotAccuracy()
    >>> metric.compute(predictions=[[0.1, 0.9, 0.0], [0.5, 0.2, 0.3]], references=[1, 2], k=2)
    {'accuracy': 0.5, 'top2_accuracy': 1.0}
"""


def _true_class_rank(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    # rank = #(strictly higher scores) + #(equal scores at a lower index): the position in a stable descending sort.
    true_scores = scores[np.arange(len(labels)), labels][:, None]
    num_higher = (scores > true_scores).sum(axis=1)
    lower_index = np.arange(scores.shape[1])[None, :] < labels[:, None]
    num_tied_before = ((scores == true_scores) & lower_index).sum(axis=1)
    return num_higher + num_tied_before


def _as_k_list(k: int | Sequence[int] | None) -> list[int]:
    if k is None:
        return []
    ks = [k] if isinstance(k, int | np.integer) else list(k)
    for value in ks:
        if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
            raise ValueError(f"k must be a positive integer or a list of them, got {k!r}")
    return [int(value) for value in ks]


class ZeroShotAccuracy(evaluate.Metric):
    """Top-1 / top-k zero-shot classification accuracy.

    Args:
        keep_in_memory (`bool`, *optional*): defaults to `True` on one process (`num_process=1`), else `False`.
        **kwargs: passed to `evaluate.Metric` (`num_process`, `process_id`, `cache_dir`, `experiment_id`, ...).

    Examples:

    ```python
    >>> from clipzoo.metrics import ZeroShotAccuracy

    >>> ZeroShotAccuracy().compute(predictions=[[0.1, 0.9, 0.0], [0.5, 0.2, 0.3]], references=[1, 2], k=2)
    {'accuracy': 0.5, 'top2_accuracy': 1.0}
    ```
    """

    def __init__(self, *args, keep_in_memory: bool | None = None, **kwargs):
        # In memory by default on one process: no cache files, and no file lock left held when _compute raises
        # (evaluate 0.4.6 then makes every later instance wait 1 s for that lock).
        if keep_in_memory is None:
            keep_in_memory = kwargs.get("num_process", 1) == 1
        super().__init__(*args, keep_in_memory=keep_in_memory, **kwargs)

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Sequence(datasets.Value("float32")),
                        "references": datasets.Value("int64"),
                    }
                ),
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            ],
        )

    def _compute(self, predictions, references, k: int | Sequence[int] | None = None) -> dict[str, float]:
        ks = _as_k_list(k)
        labels = np.asarray(references, dtype=np.int64)
        if labels.size == 0:
            raise ValueError("ZeroShotAccuracy needs at least one prediction, got none")
        if len(predictions) and not isinstance(predictions[0], list | tuple | np.ndarray):
            return self._compute_from_ids(np.asarray(predictions, dtype=np.int64), labels, ks)

        lengths = {len(row) for row in predictions}
        if len(lengths) != 1:
            raise ValueError(f"all score vectors must have the same length (number of classes), got lengths {lengths}")
        scores = np.asarray(predictions, dtype=np.float64)
        num_classes = scores.shape[1]
        if np.isnan(scores).any():
            raise ValueError("score vectors contain NaN")
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(
                f"references must be class ids in [0, {num_classes}), got min {labels.min()}, max {labels.max()}"
            )
        too_large = [value for value in ks if value > num_classes]
        if too_large:
            raise ValueError(f"k={too_large} is larger than the number of classes ({num_classes})")

        rank = _true_class_rank(scores, labels)
        result = {"accuracy": float((rank < 1).mean())}
        for value in ks:
            result[f"top{value}_accuracy"] = float((rank < value).mean())
        return result

    @staticmethod
    def _compute_from_ids(predicted: np.ndarray, labels: np.ndarray, ks: list[int]) -> dict[str, float]:
        if any(value > 1 for value in ks):
            raise ValueError(f"k={ks} needs per-sample score vectors as predictions, got predicted class ids")
        accuracy = float((predicted == labels).mean())
        result = {"accuracy": accuracy}
        for value in ks:
            result[f"top{value}_accuracy"] = accuracy
        return result
