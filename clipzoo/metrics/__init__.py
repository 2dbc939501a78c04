"""Evaluation metrics as `evaluate.Metric` subclasses.

Instantiate them directly (`ZeroShotAccuracy().compute(...)`) or load a module file with
`evaluate.load("<path>/zero_shot_accuracy.py")`; each module is self-contained and works offline. Never Hub metric names.
"""

from clipzoo.metrics.few_shot_accuracy import FewShotEpisodeAccuracy
from clipzoo.metrics.mean_iou import MeanIoU
from clipzoo.metrics.mmvp_pair_accuracy import MMVPPairAccuracy
from clipzoo.metrics.retrieval_recall import RetrievalRecall
from clipzoo.metrics.zero_shot_accuracy import ZeroShotAccuracy


__all__ = ["FewShotEpisodeAccuracy", "MeanIoU", "MMVPPairAccuracy", "RetrievalRecall", "ZeroShotAccuracy"]
