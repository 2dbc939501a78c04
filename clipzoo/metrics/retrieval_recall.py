"""Image-text retrieval recall@K (both directions) as an `evaluate.Metric`.

Self-contained (numpy, datasets, evaluate only; one import per line) so that `evaluate.load(<this file>)` works offline.
"""

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np


__all__ = ["RetrievalRecall"]

_DESCRIPTION = """
Recall@K for image->text and text->image retrieval from an image-text similarity matrix (one row per image, one
column per text), as reported by CLIP-style papers on COCO/Flickr30k.

Several captions per image are supported through the references: `references[i]` lists the indices of the texts that
describe image i. Image->text: image i is a hit at K if ANY of its texts is among the K best-scored texts. Text->image:
text j is a hit at K if an image that lists j (normally exactly one) is among the K best-scored images. Every text must
belong to at least one image. Ties are broken by index (stable descending sort), like `numpy.argmax`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[float]]`): the similarity matrix, one row of `num_texts` scores per image
        (e.g. `outputs.logits_per_image`).
    references (`list[list[int]]`): for each image, the indices of its ground-truth texts.
    k_values (`list[int]`, *optional*, defaults to `(1, 5, 10)`): the K of recall@K; each must be at most the number
        of texts and at most the number of images.
Returns:
    `dict`: `"i2t_R@K"` and `"t2i_R@K"` for each K (floats in [0, 1]) and `"rsum"` (their sum, as in the papers).
Examples:
    >>> RetrievalRecall().compute(predictions=[[0.9, 0.1], [0.8, 0.2]], references=[[0], [1]], k_values=[1])
    {'i2t_R@1': 0.5, 't2i_R@1': 1.0, 'rsum': 1.5}
"""


def _best_gt_rank(scores: np.ndarray, gt_mask: np.ndarray) -> np.ndarray:
    """Per row, the rank (0 = best) of the best-ranked ground-truth column in a stable descending sort."""
    order = np.argsort(-scores, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(scores.shape[1])[None, :].repeat(len(scores), axis=0), axis=1)
    return np.where(gt_mask, ranks, scores.shape[1]).min(axis=1)


class RetrievalRecall(evaluate.Metric):
    """Image->text and text->image recall@K with any number of captions per image.

    Args:
        keep_in_memory (`bool`, *optional*): defaults to `True` on one process (`num_process=1`), else `False`.
        **kwargs: passed to `evaluate.Metric`.

    Examples:

    ```python
    >>> from clipzoo.metrics import RetrievalRecall

    >>> # 2 images, 3 captions: image 0 has captions 0 and 1, image 1 has caption 2
    >>> similarity = [[0.2, 0.9, 0.1], [0.3, 0.1, 0.5]]
    >>> RetrievalRecall().compute(predictions=similarity, references=[[0, 1], [2]], k_values=[1])
    {'i2t_R@1': 1.0, 't2i_R@1': 0.6666666666666666, 'rsum': 1.6666666666666665}
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
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
        )

    def _compute(self, predictions, references, k_values: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
        if len(predictions) == 0:
            raise ValueError("RetrievalRecall needs at least one image row, got none")
        lengths = {len(row) for row in predictions}
        if len(lengths) != 1:
            raise ValueError(f"every similarity row must have one score per text (same length), got lengths {lengths}")
        scores = np.asarray(predictions, dtype=np.float64)  # (num_images, num_texts)
        num_images, num_texts = scores.shape
        if np.isnan(scores).any():
            raise ValueError("the similarity matrix contains NaN")
        ks = [k_values] if isinstance(k_values, int) else list(k_values)
        for k in ks:
            if not isinstance(k, int | np.integer) or k < 1:
                raise ValueError(f"k_values must be positive integers, got {k_values!r}")
            if k > min(num_images, num_texts):
                raise ValueError(
                    f"k={k} is larger than the number of texts ({num_texts}) or images ({num_images}); "
                    "pass smaller k_values"
                )

        gt = np.zeros((num_images, num_texts), dtype=bool)
        for image_index, text_indices in enumerate(references):
            if len(text_indices) == 0:
                raise ValueError(f"image {image_index} has no ground-truth text in references")
            bad = [t for t in text_indices if not 0 <= t < num_texts]
            if bad:
                raise ValueError(f"image {image_index} lists text indices {bad} outside [0, {num_texts})")
            gt[image_index, list(text_indices)] = True
        orphans = np.flatnonzero(~gt.any(axis=0))
        if orphans.size:
            raise ValueError(f"texts {orphans[:10].tolist()} (of {orphans.size}) belong to no image in references")

        i2t_rank = _best_gt_rank(scores, gt)
        t2i_rank = _best_gt_rank(scores.T, gt.T)
        result = {}
        for k in ks:
            result[f"i2t_R@{k}"] = float((i2t_rank < k).mean())
        for k in ks:
            result[f"t2i_R@{k}"] = float((t2i_rank < k).mean())
        result["rsum"] = float(sum(result.values()))
        return result
