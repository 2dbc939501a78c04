"""Semantic-segmentation mean IoU, accumulated over the whole dataset, as an `evaluate.Metric`.

Self-contained (numpy, datasets, evaluate only; one import per line) so that `evaluate.load(<this file>)` works offline.
"""

import datasets
import evaluate
import numpy as np


__all__ = ["MeanIoU"]

_DESCRIPTION = """
Mean intersection-over-union for semantic segmentation, with the convention of mmsegmentation's `IoUMetric` (used by
the official GroupViT evaluation): per class, intersection and union pixel counts are SUMMED over all images of the
dataset and divided once at the end (not averaged per image). Pixels whose reference is `ignore_index` are dropped
from both maps. A class absent from both the predictions and the references of the whole dataset has union 0: its IoU
is NaN and it is excluded from the mean (`nanmean`). A class predicted somewhere but absent from the references has
IoU 0 and does count.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[list[int]]]`): predicted label maps (H, W), values in [0, num_labels).
    references (`list[list[list[int]]]`): reference label maps of the same shapes, values in [0, num_labels) or
        `ignore_index`.
    num_labels (`int`): number of classes (background included if it is a class).
    ignore_index (`int`, *optional*, defaults to 255): reference value of pixels to ignore.
Returns:
    `dict`: `mean_iou` (nanmean of per-class IoU), `mean_accuracy` (nanmean of per-class recall), `overall_accuracy`
    (pixel accuracy over non-ignored pixels), `per_category_iou` and `per_category_accuracy` (numpy arrays of
    length num_labels, NaN for classes that never occur).
"""


def _area_counts(pred: np.ndarray, ref: np.ndarray, num_labels: int, ignore_index: int) -> np.ndarray:
    """(3, num_labels) pixel counts of intersection, prediction and reference for one image."""
    valid = ref != ignore_index
    pred, ref = pred[valid], ref[valid]
    intersect = np.bincount(ref[pred == ref], minlength=num_labels)
    return np.stack([intersect, np.bincount(pred, minlength=num_labels), np.bincount(ref, minlength=num_labels)])


def _check_pair(index: int, pred: np.ndarray, ref: np.ndarray, num_labels: int, ignore_index: int) -> None:
    if pred.shape != ref.shape or pred.ndim != 2:
        raise ValueError(
            f"sample {index}: prediction shape {pred.shape} and reference shape {ref.shape} must be equal 2-D"
        )
    valid = ref != ignore_index
    bad_ref = ref[valid & ((ref < 0) | (ref >= num_labels))]
    if bad_ref.size:
        raise ValueError(
            f"sample {index}: reference values {np.unique(bad_ref)[:5].tolist()} outside [0, {num_labels})"
        )
    bad_pred = pred[valid & ((pred < 0) | (pred >= num_labels))]
    if bad_pred.size:
        raise ValueError(
            f"sample {index}: predicted values {np.unique(bad_pred)[:5].tolist()} outside [0, {num_labels})"
        )


class MeanIoU(evaluate.Metric):
    """Dataset-level mean IoU (mmseg / GroupViT convention) with pixel accuracy.

    Args:
        keep_in_memory (`bool`, *optional*): defaults to `True` on one process (`num_process=1`), else `False`.
        **kwargs: passed to `evaluate.Metric`.

    Examples:

    ```python
    >>> from clipzoo.metrics import MeanIoU

    >>> result = MeanIoU().compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 255]]], num_labels=3)
    >>> round(result["mean_iou"], 4), result["per_category_iou"].tolist()
    (0.5, [0.5, 0.5, nan])
    ```
    """

    def __init__(self, *args, keep_in_memory: bool | None = None, **kwargs):
        # In memory by default on one process: no cache files, and no file lock left held when _compute raises
        # (evaluate 0.4.6 then makes every later instance wait 1 s for that lock).
        if keep_in_memory is None:
            keep_in_memory = kwargs.get("num_process", 1) == 1
        super().__init__(*args, keep_in_memory=keep_in_memory, **kwargs)

    def _info(self) -> evaluate.MetricInfo:
        label_map = datasets.Sequence(datasets.Sequence(datasets.Value("int64")))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": label_map, "references": label_map}),
            reference_urls=[
                "https://github.com/open-mmlab/mmsegmentation/blob/main/mmseg/evaluation/metrics/iou_metric.py"
            ],
        )

    def _compute(self, predictions, references, num_labels: int, ignore_index: int = 255) -> dict:
        if not isinstance(num_labels, int | np.integer) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
        if len(predictions) == 0:
            raise ValueError("MeanIoU needs at least one label map, got none")
        totals = np.zeros((3, num_labels), dtype=np.int64)
        for index, (pred_map, ref_map) in enumerate(zip(predictions, references)):
            pred = np.asarray(pred_map, dtype=np.int64)
            ref = np.asarray(ref_map, dtype=np.int64)
            _check_pair(index, pred, ref, num_labels, ignore_index)
            totals += _area_counts(pred, ref, num_labels, ignore_index)
        intersect, area_pred, area_ref = totals.astype(np.float64)
        union = area_pred + area_ref - intersect
        with np.errstate(invalid="ignore", divide="ignore"):
            per_category_iou = np.where(union > 0, intersect / union, np.nan)
            per_category_accuracy = np.where(area_ref > 0, intersect / area_ref, np.nan)
        if np.isnan(per_category_iou).all():
            raise ValueError("no non-ignored pixel in the references: every pixel equals ignore_index")
        return {
            "mean_iou": float(np.nanmean(per_category_iou)),
            "mean_accuracy": float(np.nanmean(per_category_accuracy)),
            "overall_accuracy": float(intersect.sum() / area_ref.sum()),
            "per_category_iou": per_category_iou,
            "per_category_accuracy": per_category_accuracy,
        }
