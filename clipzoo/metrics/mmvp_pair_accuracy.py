"""MMVP-VLM pair accuracy as an `evaluate.Metric`.

Self-contained (numpy, datasets, evaluate only; one import per line) so that `evaluate.load(<this file>)` works offline.
"""

from collections.abc import Sequence

import datasets
import evaluate
import numpy as np


__all__ = ["MMVPPairAccuracy"]

_DESCRIPTION = """
Pair accuracy of the MMVP-VLM benchmark (Tong et al., "Eyes Wide Shut?", 2024): each pair has two images that differ
in one visual pattern and one statement per image. A pair counts as correct only if BOTH matches are right.

`direction="text_to_image"` (default) is the official MMVP-VLM scoring (`scripts/evaluate_vlm.py`): each statement
chooses between the two images (softmax over images > 0.5), so the pair is correct iff
scores[0][0] > scores[1][0] and scores[1][1] > scores[0][1]. `direction="image_to_text"` lets each image choose between
the two statements instead: scores[0][0] > scores[0][1] and scores[1][1] > scores[1][0]. Ties count as wrong in both
directions (the official script breaks a tie towards the second image). Chance level is 25%.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[list[float]]]`): one 2x2 matrix per pair, `scores[image][statement]`, where statement i
        describes image i (e.g. `outputs.logits_per_image` of the two images against the two statements).
    direction (`str`, *optional*, defaults to `"text_to_image"`): `"text_to_image"` (official) or `"image_to_text"`.
    attributes (`list[str]`, *optional*): the visual pattern of each pair (e.g. "orientation", "color"), aligned with
        all predictions added so far; adds a per-attribute breakdown.
Returns:
    `dict`: `accuracy` (fraction of correct pairs), `num_pairs`, `match_accuracy` (fraction of the 2 * num_pairs single matches that
    are right), and with attributes `per_attribute_accuracy` (`{attribute: accuracy}`) and
    `per_attribute_count`.
"""


class MMVPPairAccuracy(evaluate.Metric):
    """MMVP-VLM pair accuracy: a pair is right only if both of its image-statement matches are right.

    Args:
        keep_in_memory (`bool`, *optional*): defaults to `True` on one process (`num_process=1`), else `False`.
        **kwargs: passed to `evaluate.Metric`.

    Examples:

    ```python
    >>> from clipzoo.metrics import MMVPPairAccuracy

    >>> scores = [[[0.9, 0.1], [0.2, 0.8]], [[0.9, 0.4], [0.7, 0.3]]]  # scores[pair][image][statement]
    >>> MMVPPairAccuracy().compute(predictions=scores)
    {'accuracy': 0.5, 'match_accuracy': 0.75, 'num_pairs': 2}
    >>> MMVPPairAccuracy().compute(predictions=scores, direction="image_to_text")
    {'accuracy': 0.5, 'match_accuracy': 0.75, 'num_pairs': 2}
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
                {"predictions": datasets.Sequence(datasets.Sequence(datasets.Value("float32")))}
            ),
            reference_urls=["https://github.com/tsb0601/MMVP"],
        )

    def _compute(self, predictions, direction: str = "text_to_image", attributes: Sequence[str] | None = None) -> dict:
        if direction not in ("text_to_image", "image_to_text"):
            raise ValueError(f"direction must be 'text_to_image' or 'image_to_text', got {direction!r}")
        if len(predictions) == 0:
            raise ValueError("MMVPPairAccuracy needs at least one pair, got none")
        for index, matrix in enumerate(predictions):
            if len(matrix) != 2 or any(len(row) != 2 for row in matrix):
                shape = (len(matrix), *{len(row) for row in matrix})
                raise ValueError(f"pair {index}: expected a 2x2 image x statement score matrix, got shape {shape}")
        scores = np.asarray(predictions, dtype=np.float64)  # (pairs, image, statement)
        if np.isnan(scores).any():
            raise ValueError("pair scores contain NaN")
        if direction == "text_to_image":
            scores = scores.transpose(0, 2, 1)  # (pairs, statement, image): each statement picks an image
        first_ok = scores[:, 0, 0] > scores[:, 0, 1]
        second_ok = scores[:, 1, 1] > scores[:, 1, 0]
        pair_ok = first_ok & second_ok
        result = {
            "accuracy": float(pair_ok.mean()),
            "match_accuracy": float(np.concatenate([first_ok, second_ok]).mean()),
            "num_pairs": len(pair_ok),
        }
        if attributes is not None:
            if isinstance(attributes, str) or len(attributes) != len(pair_ok):
                raise ValueError(
                    f"attributes must be a list with one name per pair ({len(pair_ok)} pairs), got {attributes!r:.80}"
                )
            names = np.asarray(attributes, dtype=object)
            result["per_attribute_accuracy"] = {
                name: float(pair_ok[names == name].mean()) for name in sorted(set(attributes))
            }
            result["per_attribute_count"] = {name: int((names == name).sum()) for name in sorted(set(attributes))}
        return result
