"""clipzoo.metrics: hand-computed values, a naive reference on random inputs, bad inputs, and `evaluate.load(path)`."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from clipzoo.metrics import FewShotEpisodeAccuracy, MeanIoU, MMVPPairAccuracy, RetrievalRecall, ZeroShotAccuracy


METRICS_DIR = Path(__file__).resolve().parents[1] / "clipzoo" / "metrics"


# ---------------------------------------------------------------- naive references (loops, sorted(), no numpy tricks)
def _naive_rank(scores, target):
    """Position of `target` when the indices are sorted by (score descending, index ascending)."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], j))
    return order.index(target)


def _naive_topk(scores, labels, k):
    return sum(_naive_rank(row, label) < k for row, label in zip(scores, labels)) / len(labels)


def _naive_recall(sim, gt_texts, k):
    num_images, num_texts = len(sim), len(sim[0])
    i2t = sum(min(_naive_rank(sim[i], t) for t in gt_texts[i]) < k for i in range(num_images)) / num_images
    hits = 0
    for t in range(num_texts):
        column = [sim[i][t] for i in range(num_images)]
        hits += min(_naive_rank(column, i) for i in range(num_images) if t in gt_texts[i]) < k
    return i2t, hits / num_texts


def _naive_miou(preds, refs, num_labels, ignore_index=255):
    inter, pred_area, ref_area = [0] * num_labels, [0] * num_labels, [0] * num_labels
    for pred, ref in zip(preds, refs):
        for p_row, r_row in zip(pred, ref):
            for p, r in zip(p_row, r_row):
                if r == ignore_index:
                    continue
                pred_area[p] += 1
                ref_area[r] += 1
                inter[r] += p == r
    ious = [
        inter[c] / (pred_area[c] + ref_area[c] - inter[c]) for c in range(num_labels) if pred_area[c] + ref_area[c]
    ]
    return sum(ious) / len(ious)


# ---------------------------------------------------------------- ZeroShotAccuracy
def test_zero_shot_hand_computed():
    scores = [
        [0.1, 0.7, 0.2],  # label 1: best -> rank 0
        [0.5, 0.3, 0.2],  # label 2: two higher -> rank 2
        [0.3, 0.3, 0.4],  # label 1: 0.4 higher, tie with lower index 0 -> rank 2
        [0.2, 0.5, 0.3],  # label 2: 0.5 higher -> rank 1
    ]
    labels = [1, 2, 1, 2]
    # top1: only sample 0 -> 1/4; top2: samples 0 and 3 -> 2/4; top3: all -> 1
    result = ZeroShotAccuracy().compute(predictions=scores, references=labels, k=[2, 3])
    assert result == {"accuracy": 0.25, "top2_accuracy": 0.5, "top3_accuracy": 1.0}
    assert result["top2_accuracy"] == _naive_topk(scores, labels, 2)


def test_zero_shot_matches_naive_on_random_scores_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, size=(40, 6)).astype(np.float32)  # few distinct values -> many ties
    labels = rng.integers(0, 6, size=40)
    result = ZeroShotAccuracy().compute(predictions=scores, references=labels, k=(1, 2, 5))
    for k in (1, 2, 5):
        assert result[f"top{k}_accuracy"] == pytest.approx(_naive_topk(scores.tolist(), labels.tolist(), k))
    # top-1 agrees with argmax (first maximum wins)
    assert result["accuracy"] == pytest.approx(np.mean(scores.argmax(1) == labels))


def test_zero_shot_from_predicted_ids_and_add_batch():
    assert ZeroShotAccuracy().compute(predictions=[2, 0, 1, 1], references=[2, 1, 1, 0]) == {"accuracy": 0.5}
    metric = ZeroShotAccuracy()
    metric.add_batch(predictions=[[0.2, 0.8]], references=[1])
    metric.add_batch(predictions=[[0.9, 0.1], [0.4, 0.6]], references=[1, 1])
    assert metric.compute() == {"accuracy": 2 / 3}


def test_zero_shot_bad_inputs():
    with pytest.raises(ValueError, match="larger than the number of classes"):
        ZeroShotAccuracy().compute(predictions=[[0.1, 0.9]], references=[1], k=5)
    with pytest.raises(ValueError, match="same length"):
        ZeroShotAccuracy().compute(predictions=[[0.1, 0.9], [0.1, 0.2, 0.7]], references=[1, 2])
    with pytest.raises(ValueError, match="references must be class ids"):
        ZeroShotAccuracy().compute(predictions=[[0.1, 0.9]], references=[2])
    with pytest.raises(ValueError, match="needs per-sample score vectors"):
        ZeroShotAccuracy().compute(predictions=[1, 0], references=[1, 1], k=2)
    with pytest.raises(ValueError, match="Mismatch in the number of predictions"):
        ZeroShotAccuracy().compute(predictions=[[0.1, 0.9]], references=[1, 0])


# ---------------------------------------------------------------- RetrievalRecall
def test_retrieval_hand_computed_multiple_captions():
    similarity = [
        [0.9, 0.1, 0.8, 0.0, 0.2],  # image 0, captions {0, 1}: t0 first -> rank 0
        [0.3, 0.2, 0.1, 0.4, 0.6],  # image 1, captions {2, 3}: order t4 t3 ... -> best rank 1
        [0.0, 0.7, 0.5, 0.3, 0.1],  # image 2, caption {4}: order t1 t2 t3 t4 -> rank 3
    ]
    captions = [[0, 1], [2, 3], [4]]
    # i2t: R@1 = 1/3 (image 0), R@3 = 2/3 (images 0, 1)
    # t2i ranks of the owning image per text: t0 0, t1 2, t2 2, t3 0, t4 2 -> R@1 = 2/5, R@3 = 5/5
    result = RetrievalRecall().compute(predictions=similarity, references=captions, k_values=(1, 3))
    expected = {"i2t_R@1": 1 / 3, "i2t_R@3": 2 / 3, "t2i_R@1": 0.4, "t2i_R@3": 1.0}
    for key, value in expected.items():
        assert result[key] == pytest.approx(value)
    assert result["rsum"] == pytest.approx(1 / 3 + 2 / 3 + 0.4 + 1.0)
    assert (result["i2t_R@3"], result["t2i_R@3"]) == pytest.approx(_naive_recall(similarity, captions, 3))


def test_retrieval_matches_naive_on_random_similarity():
    rng = np.random.default_rng(1)
    num_images, per_image = 12, 2
    similarity = rng.integers(0, 5, size=(num_images, num_images * per_image)).astype(float)
    captions = [[per_image * i + j for j in range(per_image)] for i in range(num_images)]
    result = RetrievalRecall().compute(predictions=similarity, references=captions)
    for k in (1, 5, 10):
        i2t, t2i = _naive_recall(similarity.tolist(), captions, k)
        assert result[f"i2t_R@{k}"] == pytest.approx(i2t)
        assert result[f"t2i_R@{k}"] == pytest.approx(t2i)


def test_retrieval_bad_inputs():
    sim = [[0.9, 0.1], [0.2, 0.8]]
    with pytest.raises(ValueError, match="k=5 is larger than the number of texts"):
        RetrievalRecall().compute(predictions=sim, references=[[0], [1]])
    with pytest.raises(ValueError, match="outside"):
        RetrievalRecall().compute(predictions=sim, references=[[0], [2]], k_values=[1])
    with pytest.raises(ValueError, match=r"texts \[1\] .* belong to no image"):
        RetrievalRecall().compute(predictions=sim, references=[[0], [0]], k_values=[1])
    with pytest.raises(ValueError, match="same length"):
        RetrievalRecall().compute(predictions=[[0.9, 0.1], [0.2]], references=[[0], [1]], k_values=[1])


# ---------------------------------------------------------------- MeanIoU
PRED_A, REF_A = [[0, 1, 1], [1, 2, 2]], [[0, 0, 1], [1, 255, 2]]
PRED_B, REF_B = [[0, 0], [0, 2]], [[0, 0], [0, 0]]


def test_mean_iou_hand_computed_dataset_level():
    # A (pixel (1,1) ignored): I=[1,2,1] P=[1,3,1] R=[2,2,1];  B: I=[3,0,0] P=[3,0,1] R=[4,0,0]
    # totals I=[4,2,1] P=[4,3,2] R=[6,2,1] -> union=[6,3,2] -> IoU=[2/3, 2/3, 1/2], mean 11/18
    # per-class accuracy I/R=[2/3, 1, 1] -> mean 8/9; pixel accuracy 7/9
    # (averaging per image instead would give (13/18 + 3/8) / 2 = 0.5486)
    result = MeanIoU().compute(predictions=[PRED_A, PRED_B], references=[REF_A, REF_B], num_labels=3)
    assert result["mean_iou"] == pytest.approx(11 / 18)
    np.testing.assert_allclose(result["per_category_iou"], [2 / 3, 2 / 3, 1 / 2])
    assert result["mean_accuracy"] == pytest.approx(8 / 9)
    assert result["overall_accuracy"] == pytest.approx(7 / 9)
    assert result["mean_iou"] == pytest.approx(_naive_miou([PRED_A, PRED_B], [REF_A, REF_B], 3))


def test_mean_iou_class_absent_everywhere_is_nan_and_excluded():
    result = MeanIoU().compute(predictions=[PRED_A, PRED_B], references=[REF_A, REF_B], num_labels=4)
    assert math.isnan(result["per_category_iou"][3])
    assert result["mean_iou"] == pytest.approx(11 / 18)
    # predicted but never in the references: IoU 0, and it counts
    only_pred = MeanIoU().compute(predictions=[[[0, 1]]], references=[[[0, 0]]], num_labels=2)
    np.testing.assert_allclose(only_pred["per_category_iou"], [0.5, 0.0])
    assert only_pred["mean_iou"] == pytest.approx(0.25)


def test_mean_iou_matches_naive_on_random_maps():
    rng = np.random.default_rng(2)
    preds = [rng.integers(0, 4, size=(5, 6)) for _ in range(3)]
    refs = [np.where(rng.random((5, 6)) < 0.2, 255, rng.integers(0, 4, size=(5, 6))) for _ in range(3)]
    result = MeanIoU().compute(predictions=preds, references=refs, num_labels=5, ignore_index=255)
    assert result["mean_iou"] == pytest.approx(_naive_miou([p.tolist() for p in preds], [r.tolist() for r in refs], 5))


def test_mean_iou_bad_inputs():
    with pytest.raises(ValueError, match=r"sample 0: prediction shape \(1, 2\) and reference shape \(1, 3\)"):
        MeanIoU().compute(predictions=[[[0, 1]]], references=[[[0, 1, 1]]], num_labels=2)
    with pytest.raises(ValueError, match="predicted values \\[7\\] outside"):
        MeanIoU().compute(predictions=[[[0, 7]]], references=[[[0, 1]]], num_labels=2)
    with pytest.raises(ValueError, match="reference values \\[3\\] outside"):
        MeanIoU().compute(predictions=[[[0, 1]]], references=[[[0, 3]]], num_labels=2)


# ---------------------------------------------------------------- FewShotEpisodeAccuracy
def test_few_shot_hand_computed():
    predictions = [[0, 1, 2, 3], [0, 0, 2, 2], [0, 1, 2, 0]]
    references = [[0, 1, 2, 3], [0, 1, 2, 3], [0, 1, 2, 3]]
    # per-episode accuracy 1, 1/2, 3/4 -> mean 3/4; population std sqrt((1/16 + 1/16 + 0) / 3) = 0.2041241452
    # ci95 = 1.96 * 0.2041241452 / sqrt(3) = 0.2309882152
    result = FewShotEpisodeAccuracy().compute(predictions=predictions, references=references)
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["ci95"] == pytest.approx(0.2309882152)
    assert result["num_episodes"] == 3
    import statistics

    assert result["ci95"] == pytest.approx(1.96 * statistics.pstdev([1, 0.5, 0.75]) / math.sqrt(3))
    sample = FewShotEpisodeAccuracy().compute(predictions=predictions, references=references, ddof=1)
    assert sample["ci95"] == pytest.approx(1.96 * statistics.stdev([1, 0.5, 0.75]) / math.sqrt(3))


def test_few_shot_bad_inputs():
    with pytest.raises(ValueError, match="episode 1: 2 predictions but 3 references"):
        FewShotEpisodeAccuracy().compute(predictions=[[0], [0, 1]], references=[[0], [0, 1, 2]])
    with pytest.raises(ValueError, match="Mismatch in the number"):
        FewShotEpisodeAccuracy().compute(predictions=[[0]], references=[[0], [1]])


# ---------------------------------------------------------------- MMVPPairAccuracy
MMVP_SCORES = [
    [[0.9, 0.1], [0.2, 0.8]],  # both directions right
    [[0.6, 0.5], [0.7, 0.9]],  # image->text right; statement 0 prefers image 1 (0.7 > 0.6) -> text->image wrong
    [[0.5, 0.5], [0.1, 0.9]],  # image 0 ties its statements -> image->text wrong; text->image right
    [[0.1, 0.9], [0.9, 0.1]],  # all four matches wrong
]
MMVP_ATTRIBUTES = ["color", "count", "color", "count"]


def test_mmvp_hand_computed_official_direction():
    # text->image: pairs 0 and 2 right -> 1/2; single matches 2 + 1 + 2 + 0 = 5 of 8
    result = MMVPPairAccuracy().compute(predictions=MMVP_SCORES, attributes=MMVP_ATTRIBUTES)
    assert result["accuracy"] == 0.5
    assert result["match_accuracy"] == 5 / 8
    assert result["per_attribute_accuracy"] == {"color": 1.0, "count": 0.0}
    assert result["per_attribute_count"] == {"color": 2, "count": 2}


def test_mmvp_image_to_text_and_naive_loop():
    # image->text: pairs 0 and 1 right -> 1/2; per attribute color 1/2, count 1/2
    result = MMVPPairAccuracy().compute(predictions=MMVP_SCORES, attributes=MMVP_ATTRIBUTES, direction="image_to_text")
    assert result["accuracy"] == 0.5
    assert result["per_attribute_accuracy"] == {"color": 0.5, "count": 0.5}
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 3, size=(30, 2, 2)).astype(float)
    naive = sum(s[0][0] > s[1][0] and s[1][1] > s[0][1] for s in scores.tolist()) / 30
    assert MMVPPairAccuracy().compute(predictions=scores)["accuracy"] == pytest.approx(naive)


def test_mmvp_bad_inputs():
    with pytest.raises(ValueError, match="pair 0: expected a 2x2"):
        MMVPPairAccuracy().compute(predictions=[[[0.1, 0.2, 0.3], [0.1, 0.2, 0.3]]])
    with pytest.raises(ValueError, match="one name per pair"):
        MMVPPairAccuracy().compute(predictions=MMVP_SCORES, attributes=["color"])
    with pytest.raises(ValueError, match="direction must be"):
        MMVPPairAccuracy().compute(predictions=MMVP_SCORES, direction="both")


# ---------------------------------------------------------------- evaluate.load on the module files, offline
METRIC_CLASSES = {
    "zero_shot_accuracy": "ZeroShotAccuracy",
    "retrieval_recall": "RetrievalRecall",
    "mean_iou": "MeanIoU",
    "few_shot_accuracy": "FewShotEpisodeAccuracy",
    "mmvp_pair_accuracy": "MMVPPairAccuracy",
}


def test_evaluate_load_module_files_in_process(monkeypatch, tmp_path):
    import evaluate

    monkeypatch.setattr(evaluate.config, "HF_EVALUATE_OFFLINE", True)
    for stem, class_name in METRIC_CLASSES.items():
        metric = evaluate.load(str(METRICS_DIR / f"{stem}.py"), cache_dir=str(tmp_path))
        assert type(metric).__name__ == class_name
        # loaded from evaluate's copy of the file, not from the clipzoo package
        assert not type(metric).__module__.startswith("clipzoo")
    metric = evaluate.load(str(METRICS_DIR / "mean_iou.py"), cache_dir=str(tmp_path))
    result = metric.compute(predictions=[PRED_A, PRED_B], references=[REF_A, REF_B], num_labels=3)
    assert result["mean_iou"] == pytest.approx(11 / 18)


@pytest.mark.slow
def test_evaluate_load_module_files_offline_fresh_process(tmp_path):
    script = f"""
import json, sys
import evaluate
assert evaluate.config.HF_EVALUATE_OFFLINE
names = {{}}
for stem in ["zero_shot_accuracy", "retrieval_recall", "mean_iou", "few_shot_accuracy", "mmvp_pair_accuracy"]:
    names[stem] = type(evaluate.load({str(METRICS_DIR)!r} + "/" + stem + ".py")).__name__
metric = evaluate.load({str(METRICS_DIR / "zero_shot_accuracy.py")!r})
result = metric.compute(predictions=[[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]], references=[1, 2], k=2)
assert "clipzoo" not in sys.modules, "the module files must load without the clipzoo package"
print(json.dumps({{"names": names, "result": result}}))
"""
    env = {**os.environ, "HF_EVALUATE_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path)}
    env.pop("HF_MODULES_CACHE", None)
    completed = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    output = json.loads(completed.stdout.strip().splitlines()[-1])
    assert output["names"] == METRIC_CLASSES
    assert output["result"] == {"accuracy": 0.5, "top2_accuracy": 0.5}
    assert (tmp_path / "modules" / "evaluate_modules").is_dir()
