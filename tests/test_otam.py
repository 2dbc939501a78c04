"""OTAM (clipzoo.modeling.alignment) against a slow transcription of the official recurrence."""

import pytest
import torch

from clipzoo.modeling import alignment
from clipzoo.modeling.alignment import (
    frame_cosine_similarity,
    frame_distances,
    otam_cumulative_distance,
    otam_cumulative_distance_reference,
    otam_distance,
)


SHAPES = [(8, 8), (1, 5), (5, 1), (3, 7), (7, 3), (2, 2)]


@pytest.fixture(params=["row_products", "anti_diagonal"])
def otam_path(request, monkeypatch):
    """Runs a test on both evaluations: the float64 row products (default) and the log-domain anti-diagonal sweep
    (forced by an exponent budget below zero)."""
    if request.param == "anti_diagonal":
        monkeypatch.setattr(alignment, "_EXP_DOMAIN_LIMIT", -1.0)
    return request.param


@pytest.mark.parametrize("lbda", [0.5, 0.1])
@pytest.mark.parametrize("frames", SHAPES)
def test_matches_reference_values_and_gradients(frames, lbda, otam_path):
    torch.manual_seed(sum(frames))
    dists = (torch.rand(3, 4, *frames, dtype=torch.float64) * 2).requires_grad_(True)
    ours = otam_cumulative_distance(dists, lbda)
    reference = otam_cumulative_distance_reference(dists, lbda)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)
    weights = torch.randn_like(ours)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), dists)
    (grad_reference,) = torch.autograd.grad((reference * weights).sum(), dists)
    torch.testing.assert_close(grad_ours, grad_reference, atol=1e-6, rtol=0)


def test_hand_computed_single_row():
    # One query frame: only the top row (a plain cumulative sum over the padded row) counts.
    dists = torch.tensor([[[[0.25, 0.5, 1.0]]]])
    assert otam_cumulative_distance(dists, 0.5).item() == pytest.approx(1.75, abs=1e-6)


def test_large_distances_fall_back_to_the_log_domain(monkeypatch):
    # exp(-cum / lambda) would leave float64's range for the row products here: the log-domain sweep takes over.
    torch.manual_seed(4)
    dists = (torch.rand(2, 3, 3, 3, dtype=torch.float64) * 60).requires_grad_(True)
    calls = []
    original = alignment._OTAMFunction.apply
    monkeypatch.setattr(alignment._OTAMFunction, "apply", staticmethod(lambda *a: calls.append(1) or original(*a)))
    ours = otam_cumulative_distance(dists, 0.5)
    assert calls == [1]
    reference = otam_cumulative_distance_reference(dists, 0.5)
    assert torch.isfinite(reference).all()
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)
    (grad_ours,) = torch.autograd.grad(ours.sum(), dists)
    (grad_reference,) = torch.autograd.grad(reference.sum(), dists)
    torch.testing.assert_close(grad_ours, grad_reference, atol=1e-6, rtol=0)
    otam_cumulative_distance(dists.detach() / 60, 0.5)  # distances in [0, 1]: the row path
    assert calls == [1]


def test_column_zero_is_a_free_start(otam_path):
    # With a zero-cost path along support frame 1 only from the second query frame on, the free start at padding
    # column 0 lets the alignment skip the expensive first query row entirely.
    dists = torch.full((1, 1, 4, 4), 2.0, dtype=torch.float64)
    dists[..., 1:, :] = 0.0
    ours = otam_cumulative_distance(dists, 0.1)
    torch.testing.assert_close(ours, otam_cumulative_distance_reference(dists, 0.1), atol=1e-6, rtol=0)


@pytest.mark.parametrize("lbda,dtype", [(0.1, torch.float32), (0.5, torch.float16)])
def test_official_form_overflows_ours_does_not(lbda, dtype, otam_path):
    dists = torch.full((2, 3, 8, 8), 2.0, requires_grad=True)
    official = otam_cumulative_distance_reference(dists.detach().to(dtype), lbda)
    assert torch.isinf(official).all()  # the documented failure of exp/log
    truth = otam_cumulative_distance_reference(dists.detach().double(), lbda)
    ours = otam_cumulative_distance(dists.to(dtype), lbda)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours.double(), truth, atol=1e-4, rtol=0)
    ours.sum().backward()
    assert torch.isfinite(dists.grad).all()


def test_float32_under_bfloat16_autocast(otam_path):
    torch.manual_seed(0)
    dists = torch.rand(5, 5, 8, 8) * 2
    expected = otam_distance(dists, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = otam_distance(dists, 0.5)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("frames", [(8, 8), (4, 6)])
def test_bidirectional_is_sum_of_both_directions(frames, otam_path):
    torch.manual_seed(1)
    dists = torch.rand(2, 3, *frames, dtype=torch.float64) * 2
    expected = otam_cumulative_distance_reference(dists, 0.5) + otam_cumulative_distance_reference(
        dists.transpose(-1, -2), 0.5
    )
    torch.testing.assert_close(otam_distance(dists, 0.5), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        otam_distance(dists, 0.5, bidirectional=False), otam_cumulative_distance_reference(dists, 0.5)
    )


def test_batched_equals_per_pair(otam_path):
    torch.manual_seed(2)
    dists = torch.rand(4, 5, 8, 8) * 2
    batched = otam_distance(dists)
    for q in range(4):
        for s in range(5):
            torch.testing.assert_close(batched[q, s], otam_distance(dists[q : q + 1, s : s + 1])[0, 0])


def test_frame_distances_use_epsilon_cosine():
    torch.manual_seed(3)
    query, support = torch.randn(2, 3, 6), torch.randn(4, 5, 6)
    dists = frame_distances(query, support, eps=0.01)
    assert dists.shape == (2, 4, 3, 5)
    q, s = query[1, 2], support[3, 4]
    expected = 1 - (q @ s) / (q.norm() * s.norm() + 0.01)
    torch.testing.assert_close(dists[1, 3, 2, 4], expected)
    torch.testing.assert_close(
        frame_cosine_similarity(q[None], s[None], eps=0.0)[0, 0], torch.cosine_similarity(q, s, 0)
    )


def test_bad_inputs():
    with pytest.raises(ValueError, match="Feature sizes differ"):
        frame_distances(torch.randn(2, 8, 4), torch.randn(2, 8, 5))
    with pytest.raises(ValueError, match="videos, frames, dim"):
        frame_distances(torch.randn(8, 4), torch.randn(2, 8, 4))
    with pytest.raises(ValueError, match="num_query, num_support"):
        otam_distance(torch.rand(8, 8))
    with pytest.raises(ValueError, match="lambda"):
        otam_cumulative_distance(torch.rand(1, 1, 2, 2), lbda=0.0)


def test_no_pairs_gives_empty_results_and_gradients(otam_path):
    dists = torch.rand(0, 3, 8, 8, requires_grad=True)
    out = otam_distance(dists)
    assert out.shape == (0, 3)
    out.sum().backward()
    assert dists.grad.shape == dists.shape


@pytest.mark.parametrize("frames", [(8, 8), (4, 6)])
def test_bidirectional_gradients_match_reference(frames, otam_path):
    torch.manual_seed(5)
    dists = (torch.rand(3, 4, *frames, dtype=torch.float64) * 2).requires_grad_(True)
    weights = torch.randn(3, 4, dtype=torch.float64)
    (ours,) = torch.autograd.grad((otam_distance(dists, 0.5) * weights).sum(), dists)
    reference = otam_cumulative_distance_reference(dists, 0.5) + otam_cumulative_distance_reference(
        dists.transpose(-1, -2), 0.5
    )
    (expected,) = torch.autograd.grad((reference * weights).sum(), dists)
    torch.testing.assert_close(ours, expected, atol=1e-6, rtol=0)


def test_bfloat16_distances_are_cast_before_scaling():
    torch.manual_seed(6)
    dists = (torch.rand(2, 3, 8, 8) * 2).to(torch.bfloat16)
    truth = otam_cumulative_distance_reference(dists.double(), 0.1) + otam_cumulative_distance_reference(
        dists.double().transpose(-1, -2), 0.1
    )
    torch.testing.assert_close(otam_distance(dists, 0.1).double(), truth, atol=1e-5, rtol=0)


def test_path_count_enters_the_exponent_budget():
    # With zero distances E = exp(-cum / lambda) counts the alignment paths: about exp(780) of them for 1100 x 1100
    # frames (exp(427) at 600, exp(706) at 1000), beyond float64. The budget's log(3) * (Lq + Ls) term sends this to
    # the log-domain sweep, which stays finite: -lambda * log(#paths).
    dists = torch.zeros(1, 1100, 1100, dtype=torch.float64)
    ours = otam_cumulative_distance(dists, 0.5)
    assert torch.isfinite(ours).all() and ours.item() < -0.5 * 706


@pytest.mark.parametrize("bidirectional", [False, True])
def test_known_bound_skips_the_device_sync(bidirectional, otam_path, monkeypatch):
    torch.manual_seed(7)
    dists = torch.rand(2, 3, 4, 4, dtype=torch.float64) * 2
    expected = otam_distance(dists, 0.5, bidirectional)

    def no_sync(self):
        raise AssertionError("OTAM read a value back from the tensor")

    monkeypatch.setattr(torch.Tensor, "item", no_sync)
    torch.testing.assert_close(otam_distance(dists, 0.5, bidirectional, max_distance=2.0), expected)
    with pytest.raises(AssertionError, match="read a value back"):
        otam_distance(dists, 0.5, bidirectional)


def test_double_backward_raises(otam_path):
    dists = (torch.rand(2, 3, 3, dtype=torch.float64) * 2).requires_grad_(True)
    # A squared loss makes the incoming gradient depend on dists, so without `once_differentiable` the double
    # backward would run and silently miss the terms through the saved tensors.
    (grad,) = torch.autograd.grad(otam_cumulative_distance(dists, 0.5).pow(2).sum(), dists, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        grad.sum().backward()


@pytest.mark.parametrize("shape", [(3, 2, 5, 5), (3, 2, 4, 6), (2, 3, 1, 5), (2, 3, 6, 1), (0, 2, 4, 4)])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_compiled_flag_routes_through_pure_kernels_equal_to_eager(shape, bidirectional, monkeypatch):
    # The pure functions (what torch.compile compiles) run eagerly here: bit-identical to the in-place eager path,
    # in both directions, one direction, one query frame, one support frame and an empty batch.
    calls = []

    def counted(fn, name):
        return lambda *a: calls.append(name) or fn(*a)

    kernels = (counted(alignment._row_forward, "forward"), counted(alignment._row_backward, "backward"))
    monkeypatch.setattr(alignment, "_compiled_row_kernels", lambda: kernels)
    torch.manual_seed(sum(shape))
    dists = (torch.rand(*shape, dtype=torch.float64) * 2).requires_grad_(True)
    weights = torch.randn(shape[:2], dtype=torch.float64)
    eager = otam_distance(dists, 0.5, bidirectional)
    (eager_grad,) = torch.autograd.grad((eager * weights).sum(), dists)
    assert calls == []
    routed = otam_distance(dists, 0.5, bidirectional, compiled=True)
    (routed_grad,) = torch.autograd.grad((routed * weights).sum(), dists)
    assert set(calls) == ({"forward", "backward"} if shape[0] else {"forward"})  # no pairs: no backward to run
    torch.testing.assert_close(routed, eager, rtol=0, atol=0)
    torch.testing.assert_close(routed_grad, eager_grad, rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("bidirectional", [True, False])
def test_torch_compiled_row_path_matches_the_reference(bidirectional):
    # Real torch.compile (about 25 s per shape on this CPU): same values and gradients as the slow reference.
    torch.manual_seed(11)
    dists = (torch.rand(4, 3, 8, 8) * 2).requires_grad_(True)
    weights = torch.randn(4, 3)
    ours = otam_distance(dists, 0.5, bidirectional, max_distance=2.0, compiled=True)
    (grad_ours,) = torch.autograd.grad((ours * weights).sum(), dists)
    exact = dists.detach().double().requires_grad_(True)
    reference = otam_cumulative_distance_reference(exact, 0.5)
    if bidirectional:
        reference = reference + otam_cumulative_distance_reference(exact.transpose(-1, -2), 0.5)
    (grad_reference,) = torch.autograd.grad((reference * weights.double()).sum(), exact)
    torch.testing.assert_close(ours.double(), reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad_ours.double(), grad_reference, atol=1e-5, rtol=0)


def test_mps_always_takes_the_log_domain_sweep():
    # MPS has no float64, so the row path must never be chosen there (checked without an MPS device).
    from types import SimpleNamespace

    fake = SimpleNamespace(device=torch.device("mps"), shape=(1, 2, 2))
    assert not alignment._row_path_fits(fake, 0.5, max_distance=0.0)
    assert alignment._row_path_fits(torch.zeros(1, 2, 2), 0.5, max_distance=0.0)


@pytest.mark.slow
def test_compiled_path_does_not_recompile_per_batch_size():
    # Episodes of changing size must not compile once each (Dynamo's recompile limit would then silently fall back to
    # the slower uncompiled pure functions): a second size compiles with dynamic shapes, later sizes reuse it.
    from torch._dynamo.utils import counters

    counters.clear()
    for num_query in range(3, 13):
        dists = (torch.rand(num_query, 5, 8, 8) * 2).requires_grad_(True)
        otam_distance(dists, 0.5, max_distance=2.0, compiled=True).sum().backward()
    assert counters["stats"]["unique_graphs"] <= 4  # forward and backward, each static then dynamic
