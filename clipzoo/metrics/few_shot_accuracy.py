"""Few-shot episode accuracy with a 95% confidence interval, as an `evaluate.Metric`.

Self-contained (numpy, datasets, evaluate only; one import per line) so that `evaluate.load(<this file>)` works offline.
"""

import datasets
import evaluate
import numpy as np


__all__ = ["FewShotEpisodeAccuracy"]

_DESCRIPTION = """
Mean per-episode accuracy over N test episodes with the 95% confidence interval used across the few-shot
(action-recognition) literature: ci95 = 1.96 * std(episode accuracies) / sqrt(N), where std is the population
standard deviation (numpy's default ddof=0), as in TRX / LITE (`196.0 * np.std(accuracies) / np.sqrt(len(accuracies))`)
and the methods that copy their evaluation. CLIP-FSAR's own code logs only the mean accuracy over 10,000 episodes.
Pass `ddof=1` for the sample standard deviation (the difference is negligible for thousands of episodes).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list[list[int]]`): for each episode, the predicted (episode-local) class of every query.
    references (`list[list[int]]`): for each episode, the true class of every query (same lengths).
    ddof (`int`, *optional*, defaults to 0): delta degrees of freedom of the standard deviation.
Returns:
    `dict`: `accuracy` (mean of per-episode accuracies, in [0, 1]), `ci95` (half-width, same scale), `std`,
    `num_episodes`.
"""


class FewShotEpisodeAccuracy(evaluate.Metric):
    """Mean few-shot episode accuracy ± 95% confidence interval.

    Args:
        keep_in_memory (`bool`, *optional*): defaults to `True` on one process (`num_process=1`), else `False`.
        **kwargs: passed to `evaluate.Metric`.

    Examples:

    ```python
    >>> from clipzoo.metrics import FewShotEpisodeAccuracy

    >>> result = FewShotEpisodeAccuracy().compute(predictions=[[0, 1], [0, 0]], references=[[0, 1], [0, 1]])
    >>> result["accuracy"], round(result["ci95"], 4), result["num_episodes"]
    (0.75, 0.3465, 2)
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
                    "predictions": datasets.Sequence(datasets.Value("int64")),
                    "references": datasets.Sequence(datasets.Value("int64")),
                }
            ),
            reference_urls=["https://github.com/tobyperrett/trx"],
        )

    def _compute(self, predictions, references, ddof: int = 0) -> dict:
        if len(predictions) == 0:
            raise ValueError("FewShotEpisodeAccuracy needs at least one episode, got none")
        episode_accuracy = np.empty(len(predictions), dtype=np.float64)
        for index, (episode_pred, episode_ref) in enumerate(zip(predictions, references)):
            if len(episode_pred) != len(episode_ref):
                raise ValueError(f"episode {index}: {len(episode_pred)} predictions but {len(episode_ref)} references")
            if len(episode_ref) == 0:
                raise ValueError(f"episode {index} has no queries")
            episode_accuracy[index] = np.mean(np.asarray(episode_pred) == np.asarray(episode_ref))
        num_episodes = len(episode_accuracy)
        if num_episodes - ddof <= 0:
            raise ValueError(f"ddof={ddof} needs more than {ddof} episodes, got {num_episodes}")
        std = float(np.std(episode_accuracy, ddof=ddof))
        return {
            "accuracy": float(episode_accuracy.mean()),
            "ci95": 1.96 * std / float(np.sqrt(num_episodes)),
            "std": std,
            "num_episodes": num_episodes,
        }
