"""Temporal alignment of frame sequences: OTAM (Cao et al., CVPR 2020) as used by CLIP-FSAR and MA-FSAR.

Shared block: `modeling_clip_fsar` and `modeling_ma_fsar` both import it unchanged. Torch only.

The recurrence is the one in the official CLIP-FSAR code (`OTAM_cum_dist_v2`, plain OTAM baseline `OTAM_cum_dist`):
the support-time axis is padded with a zero column at each end (M' = Ls + 2 columns), padding column 0 stays frozen at
0 (a free start at any query frame), row 0 is a plain cumulative sum, and for rows l >= 1

    cum[l, 1]     = d[l, 1]     + smin(cum[l-1, 0], cum[l-1, 1], cum[l, 0])          diagonal, vertical, horizontal
    cum[l, m]     = d[l, m]     + smin(cum[l-1, m-1], cum[l, m-1])                   2 <= m <= M'-2
    cum[l, M'-1]  = d[l, M'-1]  + smin(cum[l-1, M'-2], cum[l-1, M'-1], cum[l, M'-2])

with smin(x...) = -lambda * log(sum(exp(-x / lambda))). The vertical move into the first real column is a deviation
from the OTAM paper that we keep for parity. The distance is cum[-1, -1].

Two exact evaluations, both batched over every query-support pair:

- **Row products (default).** In the exponential domain E = exp(-cum / lambda) the recurrence is linear: every row is
  E_l = A_l * cumsum((E_{l-1} S^T) * R_l), where column 0 (always E = 1) carries the free start, A_l and R_l are
  cumulative products of exp(-d / lambda) (computed for all rows at once) and S holds the fixed diagonal / vertical
  moves. The Python loop has Lq - 1 steps of 4 small operations, forward and backward (`compiled=True` runs both
  through `torch.compile`, which cuts the per-operation overhead). It runs in float64 (every term
  is positive, so nothing cancels) and is used while (Lq + 2 * (Ls + 2)) * max|d| / lambda + (Lq + Ls) * log 3 <= 600
  (the second term bounds the log of the number of alignment paths). For cosine distances (at most 2) that holds up
  to 8 frames at lambda = 0.1 and up to 41 frames at lambda = 0.5. Reading max|d| from the tensor is a device sync;
  callers that know a bound (2 for `frame_distances`) pass `max_distance=` and skip it.
- **Anti-diagonal log-sum-exp** (any range). Cell (l, m) only needs anti-diagonals l+m-1 and l+m-2, so one step per
  anti-diagonal updates all of it, with an analytic backward. In float32 (float64 when given float64).

Both ignore autocast: the official `exp`/`log` form overflows to inf in float32 with lambda = 0.1 and in float16 with
lambda = 0.5.
"""

from __future__ import annotations

import functools
import math

import torch
from torch.autograd.function import once_differentiable


__all__ = [
    "frame_cosine_similarity",
    "frame_distances",
    "otam_cumulative_distance",
    "otam_cumulative_distance_reference",
    "otam_distance",
]

# Additive mask for a forbidden move in the scaled (-x / lambda) domain. Finite on purpose: an all-masked cell then has
# finite values and zero gradients, where -inf would give 0 * nan = nan in the log-sum-exp backward.
_FORBIDDEN = -1e30


def frame_cosine_similarity(x: torch.Tensor, y: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """Cosine similarity between the last dimensions, with `eps` added to the product of the norms.

    This is the official `cos_sim`: `x @ y.T / (|x| |y| + eps)`, which is not a true cosine for small norms.

    Args:
        x (`torch.Tensor` of shape `(..., n, dim)`): first set of vectors.
        y (`torch.Tensor` of shape `(..., m, dim)`): second set of vectors.
        eps (`float`, *optional*, defaults to 0.01): added to the denominator.

    Returns:
        `torch.Tensor` of shape `(..., n, m)`.
    """
    numerator = x @ y.transpose(-1, -2)
    denominator = x.norm(dim=-1).unsqueeze(-1) * y.norm(dim=-1).unsqueeze(-2) + eps
    return numerator / denominator


def frame_distances(query: torch.Tensor, support: torch.Tensor, eps: float = 0.01) -> torch.Tensor:
    """Frame-to-frame distances `1 - cos` for every query-support pair.

    Args:
        query (`torch.Tensor` of shape `(num_query, query_frames, dim)`): query frame features.
        support (`torch.Tensor` of shape `(num_support, support_frames, dim)`): support (or prototype) frame features.
        eps (`float`, *optional*, defaults to 0.01): see [`frame_cosine_similarity`].

    Returns:
        `torch.Tensor` of shape `(num_query, num_support, query_frames, support_frames)`.
    """
    if query.dim() != 3 or support.dim() != 3:
        raise ValueError(
            f"Expected query and support features of shape (videos, frames, dim); got {tuple(query.shape)} and "
            f"{tuple(support.shape)}."
        )
    if query.shape[-1] != support.shape[-1]:
        raise ValueError(f"Feature sizes differ: query {query.shape[-1]} vs support {support.shape[-1]}.")
    similarity = frame_cosine_similarity(query[:, None], support[None], eps=eps)  # (Nq, Ns, Lq, Ls)
    return 1.0 - similarity


@functools.lru_cache(maxsize=64)
def _vertical_mask(rows: int, columns: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask (K, 1, L) of the vertical move: allowed (0) into column 0 (which keeps it at 0), the first real
    column and the last padding column, for rows >= 1; `_FORBIDDEN` elsewhere."""
    k = torch.arange(rows + columns - 1, device=device)[:, None]
    row = torch.arange(rows, device=device)[None, :]
    m = k - row
    allowed = (row >= 1) & ((m == 0) | (m == 1) | (m == columns - 1))
    return torch.where(allowed, 0.0, _FORBIDDEN).to(dtype)[:, None, :]


def _diagonal_view(x: torch.Tensor, rows: int) -> torch.Tensor:
    """Anti-diagonals of a contiguous (B, L, W) tensor as a (B, K, L) view: [b, k, l] = x[b, l, k - l].

    With W = M' + L (M' grid columns plus L zero columns), slots off the grid land in the zero columns, and the view
    is injective (so a gradient can be written back through it)."""
    batch, _, width = x.shape
    num_diagonals = width - 1
    return x.as_strided((batch, num_diagonals, rows), (rows * width, 1, width - 1))


class _OTAMFunction(torch.autograd.Function):
    """Anti-diagonal OTAM with an analytic backward (as in soft-DTW): the gradient of the final cell with respect to
    cell c is the sum over its successors s of grad(s) * softmax weight of c in s's soft-min, swept in reverse.

    Cells are kept in the scaled domain S = -cum / lambda, so a soft-min is a log-sum-exp of predecessors and cells off
    the grid (left of column 0, and the dummy "row -1" slot) hold `_FORBIDDEN`, which removes their moves without masks;
    only the vertical move needs a mask. Cells right of the grid get values but never feed a grid cell.
    """

    @staticmethod
    def forward(ctx, d: torch.Tensor, lbda: float) -> torch.Tensor:  # d: (B, L, M') padded distances
        batch, rows, columns = d.shape
        num_diagonals = rows + columns - 1
        scaled_d = torch.nn.functional.pad(d, (0, rows)).mul_(-1.0 / lbda)  # (B, L, M' + L)
        distances = _diagonal_view(scaled_d, rows).unbind(1)  # K views (B, L)
        vertical_mask = _vertical_mask(rows, columns, d.device, d.dtype)
        # (K, B, 1 + L): slot 0 of each anti-diagonal is "row -1", so [:, :-1] is the row above.
        cells = d.new_full((num_diagonals, batch, rows + 1), _FORBIDDEN)
        cells[0, :, 1] = 0.0  # cum[0, 0] = 0
        above, level = cells[:, :, :-1].unbind(0), cells[:, :, 1:].unbind(0)
        masks = vertical_mask.unbind(0)
        # Soft-min weights of the (diagonal, vertical, horizontal) moves into every cell, kept for the backward. The
        # max-shifted exponentials give them without a second pass of exp: 3 exp + 1 log per cell in total.
        weights = d.new_zeros(num_diagonals, 3, batch, rows)
        forbidden = d.new_full((batch, rows), _FORBIDDEN)
        for k in range(1, num_diagonals):
            moves = weights[k]
            torch.stack([above[k - 2] if k >= 2 else forbidden, above[k - 1], level[k - 1]], out=moves)
            moves[1].add_(masks[k])
            peak = torch.maximum(torch.maximum(moves[0], moves[1]), moves[2])
            moves.sub_(peak).exp_()
            total = moves.sum(0)
            moves.div_(total)
            torch.add(peak, total.log_(), out=level[k]).add_(distances[k])
        ctx.save_for_backward(weights, scaled_d)
        return cells[-1, :, -1] * -lbda

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
        weights, scaled_d = ctx.saved_tensors
        num_diagonals, _, batch, rows = weights.shape
        columns = num_diagonals - rows + 1
        diagonal_w, vertical_w, horizontal_w = (weights[:, move].unbind(0) for move in range(3))
        grad = weights.new_zeros(num_diagonals, batch, rows + 1)
        grad[-1, :, -1] = grad_output
        grad_above, grad_level = grad[:, :, :-1].unbind(0), grad[:, :, 1:].unbind(0)
        for k in range(num_diagonals - 1, 0, -1):
            grad_above[k - 1].addcmul_(grad_level[k], vertical_w[k])  # to (l-1, m)
            grad_level[k - 1].addcmul_(grad_level[k], horizontal_w[k])  # to (l, m-1)
            if k >= 2:
                grad_above[k - 2].addcmul_(grad_level[k], diagonal_w[k])  # to (l-1, m-1)
        grad_d = torch.zeros_like(scaled_d)
        _diagonal_view(grad_d, rows).copy_(grad[:, :, 1:].transpose(0, 1))
        return grad_d[:, :, :columns], None


# Exponent budget of the float64 row path: every intermediate stays within exp(+-650), well inside float64's range.
_EXP_DOMAIN_LIMIT = 600.0


def _row_path_fits(flat: torch.Tensor, lbda: float, max_distance: float | None) -> bool:
    """Whether the float64 row path stays within `_EXP_DOMAIN_LIMIT` for `flat` (B, Lq, Ls).

    Largest exponent: a path's cells plus one row's 1 / A (at most (Lq + 2 * (Ls + 2)) * max|d| / lambda), plus the log
    of the number of alignment paths, at most 3 ** (Lq + Ls) (each move advances a row, a column or both; the free
    starts multiply that by at most 1.5, which the headroom between 600 and float64's 709 absorbs). MPS has no float64,
    so there the log-domain sweep always runs.
    """
    if flat.device.type == "mps":
        return False
    rows, support_frames = flat.shape[-2:]
    if max_distance is None:
        max_distance = flat.detach().abs().amax().item() if flat.numel() else 0.0
    exponent = (rows + 2 * (support_frames + 2)) * abs(max_distance) / lbda + (rows + support_frames) * math.log(3.0)
    return exponent <= _EXP_DOMAIN_LIMIT


@functools.lru_cache(maxsize=64)
def _row_matrices(columns: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`S^T` and `U` (columns, columns), float64, for row vectors.

    `b = E_prev @ S^T` is each cell's inflow from the row above: E_prev[0] (= the free start, column 0) into columns 0
    and 1, the diagonal move E_prev[m-1] into m >= 2, and the vertical moves E_prev[1] into column 1 and E_prev[-1] into
    the last padding column. `x @ U` is the cumulative sum along the row (U[j, m] = 1 for j <= m)."""
    s = torch.zeros(columns, columns, dtype=torch.float64)
    s[0, 0] = s[1, 0] = s[1, 1] = s[columns - 1, columns - 1] = 1.0
    for m in range(2, columns):
        s[m, m - 1] = 1.0
    upper = torch.ones(columns, columns, dtype=torch.float64).triu()
    return s.t().contiguous().to(device), upper.to(device)


def _row_forward(
    dists: torch.Tensor, s_t: torch.Tensor, upper: torch.Tensor, lbda: float, both_directions: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward of `_OTAMRowFunction` as a pure function, for `torch.compile` (the eager path runs the same computation
    in place): the distance `(B,)` and what the backward needs, `A`, `R`, the final cells and the row sums, each `(Lq, D * B, M')` float64 but `final` (D * B,)."""
    batch, rows, _ = dists.shape
    # log a = -d / lambda, rows first so every row is one contiguous (D * B, M') block; the padding columns 0 and M'-1
    # have d = 0. Cast first, then scale: low-precision input is not rounded again at its own precision.
    body = torch.cat([dists.transpose(0, 1), dists.permute(2, 0, 1)], 1) if both_directions else dists.transpose(0, 1)
    log_a = torch.nn.functional.pad(body.to(torch.float64), (1, 1)) * (-1.0 / lbda)
    a_cum = log_a.cumsum(-1).exp()  # A[m] = prod_{i<=m} a_i
    r_cum = torch.nn.functional.pad(a_cum[:, :, :-1].reciprocal(), (1, 0), value=1.0)  # R[m] = 1 / A[m-1]
    state = a_cum[0]  # E of row 0 (its sums are 1)
    sums = [torch.ones_like(state)]
    for row in range(1, rows):
        row_sums = ((state @ s_t) * r_cum[row]) @ upper  # cumsum(b * R)
        sums.append(row_sums)
        state = row_sums * a_cum[row]
    final = state[:, -1]
    distance = final.log() * -lbda
    if both_directions:
        distance = distance[:batch] + distance[batch:]
    return distance, a_cum, r_cum, final, torch.stack(sums)


def _row_backward(
    grad_output: torch.Tensor,
    a_cum: torch.Tensor,
    r_cum: torch.Tensor,
    final: torch.Tensor,
    sums: torch.Tensor,
    s: torch.Tensor,
    upper_t: torch.Tensor,
    lbda: float,
    batch: int,
) -> torch.Tensor:
    """Backward of `_OTAMRowFunction` as a pure function, for `torch.compile`: the float64 gradient `(B, Lq, Ls)`.

    G_l = dL/dE_l through the next row only; H_l = reverse cumsum of G_l * A_l. Counting the horizontal moves, the
    total sensitivity of cell (l, m) is H_l[m] / A_l[m], and log a[l, m] reaches the output only through
    E[l, m] = A_l[m] * sums_l[m], as a factor: dL/dlog a[l, m] = H_l[m] * sums_l[m].
    """
    rows, total, columns = a_cum.shape
    grad_final = (final.reciprocal() * -lbda).view(total // batch, batch) * grad_output.to(torch.float64)
    # G of the last row (only the final cell), already multiplied by A.
    grad_state = torch.nn.functional.pad(grad_final.reshape(total, 1) * a_cum[rows - 1, :, -1:], (columns - 1, 0))
    reverse_sums = []
    for row in range(rows - 1, 0, -1):
        reverse_sums.append(grad_state @ upper_t)
        grad_state = ((reverse_sums[-1] * r_cum[row]) @ s) * a_cum[row - 1]
    reverse_sums.append(grad_state @ upper_t)
    grad_d = (torch.stack(reverse_sums[::-1]) * sums)[:, :, 1:-1] * (-1.0 / lbda)
    if total > batch:
        return grad_d[:, :batch].transpose(0, 1) + grad_d[:, batch:].permute(1, 2, 0)
    return grad_d.transpose(0, 1)


@functools.lru_cache(maxsize=1)
def _compiled_row_kernels():
    """`torch.compile`d `_row_forward` / `_row_backward`. Default dynamism: the first shape compiles static, a second
    one recompiles with dynamic sizes, so changing episode sizes do not hit Dynamo's recompile limit (after which it
    would run the pure functions uncompiled, slower than the in-place eager path)."""
    return torch.compile(_row_forward), torch.compile(_row_backward)


class _OTAMRowFunction(torch.autograd.Function):
    """OTAM by rows in the exponential domain, with an analytic backward.

    With a = exp(-d / lambda), A[m] = prod_{i<=m} a_i and R[m] = 1 / A[m-1], each row is the linear recurrence
    E[m] = a_m (b_m + E[m-1]), i.e. E = A * cumsum(b * R) with b = E_prev @ S^T (row 0: E = A). Every term is
    positive, so float64 keeps full relative precision while the exponents stay within `_EXP_DOMAIN_LIMIT`.

    Takes the unpadded distances `(B, Lq, Ls)`; padding, the float64 cast and (with `both_directions`, square
    distances only) the transposed direction happen inside, so they cost no autograd nodes. Returns `(B,)` in float32
    (float64 for float64 input), summed over the two directions when `both_directions`. With `compiled`, the forward
    and backward run through `torch.compile`.
    """

    @staticmethod
    def forward(ctx, dists: torch.Tensor, lbda: float, both_directions: bool, compiled: bool = False) -> torch.Tensor:
        ctx.lbda, ctx.batch, ctx.dtype, ctx.compiled = lbda, dists.shape[0], dists.dtype, compiled
        out_dtype = torch.float64 if dists.dtype == torch.float64 else torch.float32
        s_t, upper = _row_matrices(dists.shape[-1] + 2, dists.device)
        if compiled:
            distance, a_cum, r_cum, final, sums = _compiled_row_kernels()[0](dists, s_t, upper, lbda, both_directions)
            ctx.save_for_backward(a_cum, r_cum, final, sums)
            return distance.to(out_dtype)
        # Eager: the same computation as `_row_forward`, written in place into preallocated buffers, which is faster
        # when every operation is tiny (measured in benchmarks/RESULTS.md).
        batch, rows, _ = dists.shape
        directions = 2 if both_directions else 1
        log_a = dists.new_empty((rows, directions * batch, dists.shape[-1] + 2), dtype=torch.float64)
        log_a[:, :, 0] = 0.0
        log_a[:, :, -1] = 0.0
        log_a[:, :batch, 1:-1].copy_(dists.transpose(0, 1)).mul_(-1.0 / lbda)
        if both_directions:
            log_a[:, batch:, 1:-1].copy_(dists.permute(2, 0, 1)).mul_(-1.0 / lbda)
        a_cum = log_a.cumsum(-1).exp_()
        r_cum = torch.empty_like(log_a)
        r_cum[:, :, 0] = 1.0
        torch.reciprocal(a_cum[:, :, :-1], out=r_cum[:, :, 1:])
        sums = torch.empty_like(log_a)
        sums[0] = 1.0
        weighted = torch.empty_like(log_a[0])
        state = a_cum[0]
        for row in range(1, rows):
            torch.mm(state, s_t, out=weighted)
            torch.mm(weighted.mul_(r_cum[row]), upper, out=sums[row])
            state = a_cum[row] * sums[row]
        final = state[:, -1]
        ctx.save_for_backward(a_cum, r_cum, final, sums)
        distance = final.log().mul_(-lbda)
        out = dists.new_empty(batch, dtype=out_dtype)
        if both_directions:
            return torch.add(distance[:batch], distance[batch:], out=out)
        return out.copy_(distance)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        a_cum, r_cum, final, sums = ctx.saved_tensors
        rows, total, columns = a_cum.shape
        batch = ctx.batch
        if batch == 0:
            return a_cum.new_zeros((0, rows, columns - 2), dtype=ctx.dtype), None, None, None
        s, upper_t = (m.t() for m in _row_matrices(columns, a_cum.device))
        if ctx.compiled:
            grad = _compiled_row_kernels()[1](grad_output, a_cum, r_cum, final, sums, s, upper_t, ctx.lbda, batch)
            return grad.to(ctx.dtype), None, None, None
        # Eager, in place: `_row_backward`'s computation.
        reverse_sums = torch.empty_like(a_cum)
        grad_state = torch.zeros_like(a_cum[0])
        last = grad_state[:, -1]
        torch.reciprocal(final, out=last)
        last.mul_(-ctx.lbda).unflatten(0, (total // batch, batch)).mul_(grad_output.to(torch.float64))
        for row in range(rows - 1, 0, -1):
            torch.mm(grad_state.mul_(a_cum[row]), upper_t, out=reverse_sums[row])
            grad_state = (reverse_sums[row] * r_cum[row]) @ s
        torch.mm(grad_state.mul_(a_cum[0]), upper_t, out=reverse_sums[0])
        grad_d = reverse_sums.mul_(sums)[:, :, 1:-1].mul_(-1.0 / ctx.lbda)
        grad = a_cum.new_empty((batch, rows, columns - 2), dtype=ctx.dtype)
        if total > batch:
            return (
                torch.add(grad_d[:, :batch].transpose(0, 1), grad_d[:, batch:].permute(1, 2, 0), out=grad),
                None,
                None,
                None,
            )
        return grad.copy_(grad_d.transpose(0, 1)), None, None, None


def otam_cumulative_distance(
    dists: torch.Tensor, lbda: float = 0.5, max_distance: float | None = None, compiled: bool = False
) -> torch.Tensor:
    """One-direction OTAM distance, vectorised along anti-diagonals and batched over all leading dimensions.

    Args:
        dists (`torch.Tensor` of shape `(..., query_frames, support_frames)`): frame distances.
        lbda (`float`, *optional*, defaults to 0.5): soft-min temperature (0.5 CLIP-FSAR, 0.1 plain OTAM).
        max_distance (`float`, *optional*): a bound on `|dists|` known to the caller (2 for [`frame_distances`]). It
            picks the evaluation path without reading the maximum from the tensor, which is a device sync (and breaks
            CUDA graph capture). A wrong bound can overflow the float64 row path.
        compiled (`bool`, *optional*, defaults to `False`): run the row path's forward and backward through
            `torch.compile` (about 25 s of compilation per new input shape on a CPU, then fewer, fused kernels; needs
            a C++ compiler on CPU, Triton on GPU). Same results; the log-domain fallback stays eager.

    Returns:
        `torch.Tensor` of shape `(...)`, float32 (float64 for float64 input). Differentiable once (no double
        backward).
    """
    if dists.dim() < 2:
        raise ValueError(f"Expected dists of shape (..., query_frames, support_frames); got {tuple(dists.shape)}.")
    if lbda <= 0:
        raise ValueError(f"OTAM lambda must be > 0; got {lbda}.")
    dtype = torch.float64 if dists.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=dists.device.type, enabled=False):
        lead = dists.shape[:-2]
        rows, support_frames = dists.shape[-2:]
        flat = dists.reshape(-1, rows, support_frames)
        if _row_path_fits(flat, lbda, max_distance):
            return _OTAMRowFunction.apply(flat, float(lbda), False, compiled).reshape(lead)
        padded = torch.nn.functional.pad(flat.to(dtype), (1, 1))  # (B, L, M')
        return _OTAMFunction.apply(padded, float(lbda)).reshape(lead)


def otam_distance(
    dists: torch.Tensor,
    lbda: float = 0.5,
    bidirectional: bool = True,
    max_distance: float | None = None,
    compiled: bool = False,
) -> torch.Tensor:
    """OTAM distance between every query and support sequence, optionally summed over both directions.

    Args:
        dists (`torch.Tensor` of shape `(num_query, num_support, query_frames, support_frames)`): frame distances,
            e.g. from [`frame_distances`].
        lbda (`float`, *optional*, defaults to 0.5): soft-min temperature.
        bidirectional (`bool`, *optional*, defaults to `True`): add the support-to-query alignment (the transposed
            distance matrix), as the official code does unless `TRAIN.SINGLE_DIRECT`.
        max_distance (`float`, *optional*): a known bound on `|dists|`; see [`otam_cumulative_distance`].
        compiled (`bool`, *optional*, defaults to `False`): `torch.compile` the row path; see
            [`otam_cumulative_distance`].

    Returns:
        `torch.Tensor` of shape `(num_query, num_support)`.
    """
    if dists.dim() != 4:
        raise ValueError(
            f"Expected dists of shape (num_query, num_support, query_frames, support_frames); got {tuple(dists.shape)}."
        )
    if not bidirectional:
        return otam_cumulative_distance(dists, lbda, max_distance, compiled)
    if lbda <= 0:
        raise ValueError(f"OTAM lambda must be > 0; got {lbda}.")
    num_query, num_support, rows, support_frames = dists.shape
    if rows == support_frames:
        with torch.autocast(device_type=dists.device.type, enabled=False):
            flat = dists.reshape(-1, rows, support_frames)
            if _row_path_fits(flat, lbda, max_distance):
                return _OTAMRowFunction.apply(flat, float(lbda), True, compiled).reshape(num_query, num_support)
    transposed = dists.transpose(-1, -2)
    if dists.shape[-1] == dists.shape[-2]:
        both = otam_cumulative_distance(torch.stack([dists, transposed]), lbda, max_distance, compiled)
        return both[0] + both[1]
    return otam_cumulative_distance(dists, lbda, max_distance, compiled) + otam_cumulative_distance(
        transposed, lbda, max_distance, compiled
    )


def otam_cumulative_distance_reference(dists: torch.Tensor, lbda: float = 0.5) -> torch.Tensor:
    """Slow transcription of the official recurrence (`exp`/`log`, loops over rows and columns), in `dists`' dtype.

    Kept as the ground truth for tests and benchmarks. It overflows to `inf` where the official code does.
    """
    d = torch.nn.functional.pad(dists, (1, 1))
    cum = torch.zeros_like(d)
    rows, columns = d.shape[-2:]

    def smin(*values: torch.Tensor) -> torch.Tensor:
        return -lbda * torch.log(sum(torch.exp(-v / lbda) for v in values))

    for m in range(1, columns):
        cum[..., 0, m] = d[..., 0, m] + cum[..., 0, m - 1]
    for r in range(1, rows):
        cum[..., r, 1] = d[..., r, 1] + smin(cum[..., r - 1, 0], cum[..., r - 1, 1], cum[..., r, 0])
        for m in range(2, columns - 1):
            cum[..., r, m] = d[..., r, m] + smin(cum[..., r - 1, m - 1], cum[..., r, m - 1])
        cum[..., r, -1] = d[..., r, -1] + smin(cum[..., r - 1, -2], cum[..., r - 1, -1], cum[..., r, -2])
    return cum[..., -1, -1]
