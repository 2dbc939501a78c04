"""APE / Tip-Adapter maths against slow references written straight from the papers' equations (float64 loops)."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipzoo.modeling import ape_math


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _problem(num_classes=4, shots=3, dim=12, queries=9, seed=0):
    text = _unit(num_classes, dim, seed=seed)
    labels = torch.arange(num_classes).repeat_interleave(shots)
    # keys near their class text vector, so the cache carries signal
    keys = F.normalize(text[labels] + 0.8 * _unit(len(labels), dim, seed=seed + 1), dim=-1)
    query_labels = torch.arange(queries) % num_classes
    queries_f = F.normalize(text[query_labels] + 1.2 * _unit(queries, dim, seed=seed + 2), dim=-1)
    return text, keys, labels, queries_f, query_labels


def _similarity_loop(class_sets):
    """Paper / official definition: sum over i != j and every pair (m, n), divided by the number of pairs."""
    dim = class_sets[0][0].shape[0]
    total, count = torch.zeros(dim, dtype=torch.float64), 0
    for i, set_i in enumerate(class_sets):
        for j, set_j in enumerate(class_sets):
            if i == j:
                continue
            for x in set_i:
                for y in set_j:
                    total += x * y
                    count += 1
    return total / count


def _class_sets(text, keys=None, labels=None):
    sets = [[text[c]] for c in range(text.shape[0])]
    if keys is not None:
        for key, label in zip(keys, labels.tolist()):
            sets[label].append(key)
    return sets


@pytest.mark.parametrize("shots", [1, 3])
def test_similarity_closed_form_matches_loop(shots):
    text, keys, labels, _, _ = _problem(shots=shots)
    closed = ape_math.inter_class_similarity(text, keys, labels)
    torch.testing.assert_close(closed, _similarity_loop(_class_sets(text, keys, labels)), rtol=1e-12, atol=1e-14)


def test_similarity_text_only_and_unequal_shots():
    text, keys, labels, _, _ = _problem()
    torch.testing.assert_close(ape_math.inter_class_similarity(text), _similarity_loop(_class_sets(text)))
    keep = torch.tensor([0, 1, 2, 3, 5, 6, 9])  # classes with 3, 2, 1, 1 keys
    closed = ape_math.inter_class_similarity(text, keys[keep], labels[keep])
    torch.testing.assert_close(closed, _similarity_loop(_class_sets(text, keys[keep], labels[keep])))


def test_criterion_and_selection():
    text, keys, labels, _, _ = _problem()
    weights = (0.3, 0.7)
    criterion = ape_math.ape_criterion(text, keys, labels, weights)
    sim = _similarity_loop(_class_sets(text, keys, labels))
    mean = text.mean(0)
    var = ((text - mean) ** 2).sum(0) / (text.shape[0] - 1)  # unbiased, across classes, text only
    torch.testing.assert_close(criterion, -0.3 * sim + 0.7 * var)
    idx = ape_math.select_channels(criterion, 5)
    assert sorted(idx.tolist()) == sorted(sorted(range(12), key=lambda k: -criterion[k].item())[:5])
    with pytest.raises(ValueError, match="feature dimension"):
        ape_math.select_channels(criterion, 13)


def _ape_reference(f, text, keys, labels, idx, alpha, beta, gamma):
    """Per query, per cache entry, straight from the APE equations (refined cache edge, KL in bits)."""
    num_classes = text.shape[0]
    idx = idx.tolist()

    def sub(v):
        v = v[idx]
        return v / math.sqrt(float((v * v).sum()))

    text_r = [sub(text[c]) for c in range(num_classes)]
    keys_r = [sub(k) for k in keys]
    weights = []
    for e, key in enumerate(keys_r):
        cos = [float(key @ t) for t in text_r]
        z = sum(math.exp(c) for c in cos)
        probs = [math.exp(c) / z for c in cos]
        kl = 0.0
        for c in range(num_classes):
            value = 1.0 if c == labels[e] else 0.0
            kl += value * math.log2((value + 1e-6) / (probs[c] + 1e-6))
        weights.append(math.exp(gamma * kl))
    out = torch.zeros(f.shape[0], num_classes, dtype=torch.float64)
    for n in range(f.shape[0]):
        fr = sub(f[n])
        for c in range(num_classes):
            out[n, c] = 100.0 * float(f[n] @ text[c])
        for e, key in enumerate(keys_r):
            out[n, labels[e]] += alpha * math.exp(-beta * (1.0 - float(fr @ key))) * weights[e]
    return out


def test_ape_logits_match_reference():
    text, keys, labels, f, _ = _problem()
    idx = torch.tensor([0, 3, 4, 7, 8, 11])
    got = ape_math.ape_logits(f, text, keys, labels, idx, alpha=1.7, beta=3.0, gamma=0.4)
    torch.testing.assert_close(got, _ape_reference(f, text, keys, labels, idx, 1.7, 3.0, 0.4))


def test_kl_bits_near_log2_c_for_uniform_softmax():
    # cosines of 0 everywhere -> uniform softmax -> KL = log2((1+1e-6)/(1/C+1e-6)) exactly
    keys = torch.zeros(3, 4, dtype=torch.float64)
    text = torch.zeros(5, 4, dtype=torch.float64)
    kl = ape_math.cache_divergence_bits(keys, text, torch.tensor([0, 1, 4]))
    torch.testing.assert_close(kl, torch.full((3,), math.log2((1 + 1e-6) / (0.2 + 1e-6)), dtype=torch.float64))


def test_tip_adapter_logits_match_reference():
    text, keys, labels, f, _ = _problem()
    got = ape_math.tip_adapter_logits(f, text, keys, labels, alpha=2.0, beta=5.5)
    ref = 100.0 * f @ text.t()
    for n in range(f.shape[0]):
        for e in range(keys.shape[0]):
            ref[n, labels[e]] += 2.0 * math.exp(-5.5 * (1 - float(f[n] @ keys[e])))
    torch.testing.assert_close(got, ref)


def test_ape_t_logits_match_reference():
    text, keys, labels, f, _ = _problem()
    idx = torch.tensor([2, 5, 9])
    residual = _unit(4, 3, seed=7) * 0.1
    value_weights = torch.linspace(0.5, 1.5, keys.shape[0], dtype=torch.float64)
    got = ape_math.ape_t_logits(f, text, keys, labels, idx, residual, value_weights, alpha=1.3, beta=2.0)
    new_text, new_keys = text.clone(), keys.clone()
    for c in range(4):
        for q, k in enumerate(idx.tolist()):
            new_text[c, k] += residual[c, q]
    for e in range(keys.shape[0]):
        for q, k in enumerate(idx.tolist()):
            new_keys[e, k] += residual[labels[e], q]
    ref = 100.0 * f @ new_text.t()
    for n in range(f.shape[0]):
        for e in range(keys.shape[0]):
            ref[n, labels[e]] += 1.3 * math.exp(-2.0 * (1 - float(f[n] @ new_keys[e]))) * value_weights[e]
    torch.testing.assert_close(got, ref)
    zero = ape_math.ape_t_logits(f, text, keys, labels, idx, 0 * residual, torch.ones_like(value_weights), 1.3, 2.0)
    torch.testing.assert_close(zero, ape_math.tip_adapter_logits(f, text, keys, labels, 1.3, 2.0))


def test_official_grid():
    betas = ape_math.official_grid(7, 200)
    assert len(betas) == 200 and betas[0] == 0.1 and betas[1] == pytest.approx(0.1 + 6.9 / 200)
    assert max(betas) < 7
    assert ape_math.official_grid(1, 20, start=0.0)[:2] == [0.0, 0.05]


def _naive_search(f, text, keys, labels, idx, ql, betas, alphas, gammas):
    """The official APE triple loop: strict `acc > best`, first best kept, best starts at 0."""
    tr, kr, fr = ape_math.refine(text, idx), ape_math.refine(keys, idx), ape_math.refine(f, idx)
    kl = ape_math.cache_divergence_bits(kr, tr, labels)
    onehot = F.one_hot(labels, text.shape[0]).double()
    affinity, text_logits = fr @ kr.t(), 100.0 * f @ text.t()
    best, best_acc = (0, 0, 0), 0.0
    for bi, beta in enumerate(betas):
        for ai, alpha in enumerate(alphas):
            for gi, gamma in enumerate(gammas):
                logits = text_logits + alpha * torch.exp(-beta * (1 - affinity)) @ (
                    onehot * torch.exp(gamma * kl)[:, None]
                )
                acc = 100.0 * float((logits.argmax(1) == ql).double().mean())
                if acc > best_acc:
                    best, best_acc = (bi, ai, gi), acc
    return best, best_acc


@pytest.mark.parametrize("max_elements", [1 << 25, 97])
def test_grid_search_matches_naive_triple_loop(max_elements):
    text, keys, labels, f, ql = _problem(num_classes=5, shots=4, dim=16, queries=40, seed=3)
    idx = torch.arange(0, 16, 2)
    betas, alphas, gammas = (
        ape_math.official_grid(7, 12),
        ape_math.official_grid(7, 6),
        ape_math.official_grid(1, 4, 0),
    )
    tr, kr, fr = ape_math.refine(text, idx), ape_math.refine(keys, idx), ape_math.refine(f, idx)
    kl = ape_math.cache_divergence_bits(kr, tr, labels)
    onehot = F.one_hot(labels, 5).double()
    values = torch.stack([onehot * torch.exp(g * kl)[:, None] for g in gammas])
    index, correct = ape_math.grid_search(100 * f @ text.t(), fr @ kr.t(), values, ql, betas, alphas, max_elements)
    ref_index, ref_acc = _naive_search(f, text, keys, labels, idx, ql, betas, alphas, gammas)
    assert index == ref_index
    assert 100.0 * correct[index].item() / len(ql) == pytest.approx(ref_acc)
    # every grid point agrees, not only the winner
    for bi in (0, 5, 11):
        for ai in (0, 3):
            for gi in (0, 3):
                logits = ape_math.ape_logits(f, text, keys, labels, idx, alphas[ai], betas[bi], gammas[gi])
                assert correct[bi, ai, gi].item() == int((logits.argmax(1) == ql).sum())


def test_grid_search_rejects_empty_split():
    with pytest.raises(ValueError, match="empty"):
        ape_math.grid_search(
            torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(1, 4, 3), torch.zeros(0, dtype=torch.long), [1.0], [1.0]
        )
