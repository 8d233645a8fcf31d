"""K-means (Lloyd) with greedy k-means++ seeding, in pure torch, DDP-aware.

The algorithm follows scikit-learn's ``KMeans(algorithm="lloyd")``:

* greedy k-means++ seeding with ``2 + int(log(K))`` local trials per center,
* ``n_init`` restarts, the run with the lowest inertia is kept,
* ``tol`` is relative to the data: a run stops when the sum over clusters of the
  squared center shift is ``<= tol * mean(var(x, dim=0))``, or when no label
  changed between two iterations,
* empty clusters are repaired in every iteration by moving each empty center to
  one of the points farthest from its assigned (current) center; that point is
  taken out of its old cluster's sum,
* the data are centered (global mean subtracted) before clustering, to reduce
  cancellation in ``||x||^2 - 2 x.c + ||c||^2``; the mean is added back to the
  returned centers,
* after the last iteration the labels are recomputed for the final centers
  (unless the run converged with unchanged labels), and the inertia is the exact
  ``sum ||x_i - c_{label_i}||^2`` accumulated in float64.

Implementation (speed on CPU, where this must keep up with scikit-learn):

* the restarts are advanced *together*: their centers form one ``(R*K, d)``
  matrix, so one Lloyd iteration of all active runs is one GEMM plus a handful
  of vectorized passes (few, large tensor ops instead of many small ones: less
  Python and thread-pool overhead per run).  A run that stops leaves the batch.
  All k-means++ seeds of a batch are drawn before its Lloyd loop; seeding is the
  only consumer of the random generator, so this draws the same seeds as running
  the restarts one after another.  A batch holds two ``(R, N)`` int32 label arrays;
  ``R`` is capped so that they stay under ~64 MiB (large ``N``: fewer runs per
  batch, down to one),
* distances are computed in column chunks as ``(R*K, rows)`` blocks
  ``C @ x_chunk^T`` (at most ``chunk_size x K`` elements at a time, never an
  ``N x K x d`` tensor); the nearest center is taken without ``argmin`` along
  dim 0 (slow on CPU): ``label = min_k (K * [d_k > min_j d_j] + k)``, exactly
  the first minimizer,
* k-means++ takes its candidates' distances to all rows, and the cumulative sum
  of the potentials it draws rows from, over column blocks of ``2**20`` elements
  (never a ``restarts x trials x N`` block); a second pass over the same blocks
  updates the running potentials with the chosen candidates (the same values),
* the M-step is incremental: per-cluster float64 sums/counts are kept per rank
  and only the rows whose label changed are moved between clusters (the first
  iteration sums everything); after the first iterations few labels change,
* one host synchronization per iteration for all runs (counts, numbers of
  changed labels, center shifts), a second one only for a run with an empty
  cluster.

On a GPU the loop is bound by kernel launches and host synchronizations, not by
arithmetic, so there (``_accelerated``) the E-step takes values and labels from
one ``torch.min``, the M-step recomputes the sums as one-hot GEMMs (no
``nonzero`` synchronization, no atomics) and the default chunks are large (one
for 70,000 x 10 rows); the result is the same as on the CPU path.

Everything runs on ``x.device``.

Distributed (DDP) mode
----------------------
Each rank passes only its own shard; shards may have different sizes and may be
empty.  All collectives use the default process group.  The *global* data are
the concatenation of the shards in rank order, and the algorithm is run exactly
as if a single process held that concatenation:

* mean / variance (for ``tol``) and the per-iteration per-cluster sums, counts
  and number of changed labels are ``all_reduce``-d (SUM, float64),
* the empty-cluster repair gathers every rank's local farthest candidates
  (distance, global index, label, point) and every rank picks the same global
  winners (largest distance first, ties broken by lowest global index),
* seeding is **exact distributed greedy k-means++**: all random numbers come
  from one CPU ``torch.Generator`` that every rank seeds identically (from
  ``seed``, or when ``seed is None`` from a value drawn from torch's global RNG
  on rank 0 and shared with the others).  The first center is a uniformly drawn
  *global* row index; for each next center ``2 + int(log K)`` uniforms ``u`` are
  drawn, and ``u * total_potential`` is located in the global cumulative sum of
  ``D(x)^2`` (first the owning rank via the gathered per-rank potentials, then
  the row inside it).  The owners contribute the candidate rows, every rank
  gets them through a SUM ``all_reduce`` of a zero-filled buffer (exact), the
  candidates' potentials are gathered per rank and summed in rank order, and the
  best (lowest potential) candidate becomes the next center.  The seeded
  centers are finally broadcast from rank 0 (a no-op in exact arithmetic).

A single-process call is the same code with world size 1, so single-process and
distributed runs on the same global data (same row order, same ``seed``) draw
the same seeds and give the same centers/inertia up to float rounding of the
reductions (and the same labels, barring exact ties).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["KMeansResult", "kmeans", "pairwise_sq_dists", "assign_nearest"]

# memory budget of the per-batch label arrays, counted as 2 x batch x N x 8 bytes (they are int32 now: half of
# it); restarts beyond it run in further batches
_BATCH_BYTES = 1 << 27
# elements of one block of k-means++'s candidate distances (restarts x trials x rows), and of its float64 sums
_SEED_BLOCK_ELEMS = 1 << 20
# elements of one distance block (chunk_size x K) by default on an accelerator
_ACCEL_CHUNK_ELEMS = 1 << 24


@dataclass
class KMeansResult:
    """Result of :func:`kmeans`.

    Attributes:
        centers: ``(K, d)`` cluster centers, same device/dtype as ``x``.
        labels: ``(N,)`` long labels of the ``x`` passed in (the local shard in DDP mode).
        inertia: sum of squared distances to the assigned center over ALL ranks' data.
        n_iter: number of Lloyd iterations of the kept run.
    """

    centers: Tensor
    labels: Tensor
    inertia: float
    n_iter: int


# ----------------------------------------------------------------------------------------------
# distance helpers
# ----------------------------------------------------------------------------------------------
def _check_chunk_size(chunk_size: int) -> int:
    chunk_size = int(chunk_size)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return chunk_size


def _check_pair(x: Tensor, centers: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"x must be a 2-D tensor (N, d), got shape {tuple(getattr(x, 'shape', ()))}")
    if not isinstance(centers, Tensor) or centers.dim() != 2:
        raise ValueError(
            f"centers must be a 2-D tensor (K, d), got shape {tuple(getattr(centers, 'shape', ()))}"
        )
    if x.shape[1] != centers.shape[1]:
        raise ValueError(f"feature dims differ: x has {x.shape[1]}, centers have {centers.shape[1]}")
    dtype = torch.promote_types(x.dtype, centers.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    return x.to(dtype), centers.to(device=x.device, dtype=dtype)


def pairwise_sq_dists(x: Tensor, centers: Tensor, chunk_size: int = 65536) -> Tensor:
    """Squared euclidean distances ``(N, K)`` via ``||x||^2 - 2 x.c + ||c||^2``, clamped at 0.

    Computed in row chunks of ``chunk_size`` (the output itself is ``N x K``).
    """
    chunk_size = _check_chunk_size(chunk_size)
    x, centers = _check_pair(x, centers)
    n, k = x.shape[0], centers.shape[0]
    out = torch.empty((n, k), dtype=x.dtype, device=x.device)
    c_sq = (centers * centers).sum(1).unsqueeze(0)
    ct = centers.t()
    for s in range(0, n, chunk_size):
        xc = x[s : s + chunk_size]
        d = torch.addmm(c_sq, xc, ct, alpha=-2.0)
        d.add_((xc * xc).sum(1, keepdim=True)).clamp_min_(0)
        out[s : s + chunk_size] = d
    return out


def assign_nearest(x: Tensor, centers: Tensor, chunk_size: int = 65536) -> tuple[Tensor, Tensor]:
    """Nearest center of every row of ``x``.

    Returns ``(labels, min_sq_dist)``: long ``(N,)`` and ``(N,)`` in x's dtype (clamped at 0).
    Ties go to the lowest center index.  Never materializes more than ``chunk_size x K``.
    """
    chunk_size = _check_chunk_size(chunk_size)
    x, centers = _check_pair(x, centers)
    if centers.shape[0] == 0:
        raise ValueError("centers must contain at least one center")
    x_sq = (x * x).sum(1)
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    vals = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    _e_step(x, centers, chunk_size, labels, vals)
    return labels, vals.add_(x_sq).clamp_min_(0)


def _e_step(x: Tensor, centers: Tensor, chunk_size: int, labels: Tensor, vals: Tensor) -> None:
    """Assign rows to their nearest center (lowest index on exact ties); write
    ``min_k(||c_k||^2 - 2 x.c_k)`` to ``vals``: :func:`_e_step_batch` with one run."""
    _e_step_batch(x, centers.unsqueeze(0), chunk_size, labels.view(1, -1), vals.view(1, -1))


def _sq_dists_small(x: Tensor, x_sq: Tensor, c: Tensor) -> Tensor:
    """``(m, N)`` clamped squared distances of a few points ``c`` to all rows (k-means++): one GEMM
    straight into the result, no temporary beyond the output itself."""
    out = torch.addmm((c * c).sum(1, keepdim=True), c, x.t(), alpha=-2.0)
    return out.add_(x_sq).clamp_min_(0)


# ----------------------------------------------------------------------------------------------
# communication (single process == world of size 1)
# ----------------------------------------------------------------------------------------------
class _Comm:
    def __init__(self, enabled: bool, device: torch.device):
        self.enabled = enabled
        if enabled:
            self.rank = dist.get_rank()
            self.world = dist.get_world_size()
            backend = str(dist.get_backend()).lower()
            if device.type == "cuda" and "nccl" in backend:
                self.device = device
            elif "gloo" in backend or "mpi" in backend:
                self.device = torch.device("cpu")
            elif "nccl" in backend:
                self.device = torch.device("cuda", torch.cuda.current_device())
            else:
                self.device = device
        else:
            self.rank, self.world, self.device = 0, 1, device

    def all_reduce_(self, t: Tensor) -> Tensor:
        """In-place SUM all-reduce (returns ``t``)."""
        if self.enabled:
            tt = t.to(self.device)
            dist.all_reduce(tt)
            if tt is not t:
                t.copy_(tt)
        return t

    def all_gather(self, t: Tensor) -> Tensor:
        """Stack of every rank's ``t`` along a new dim 0 (on ``t``'s device)."""
        if not self.enabled:
            return t.unsqueeze(0)
        tt = t.to(self.device).contiguous()
        out = [torch.empty_like(tt) for _ in range(self.world)]
        dist.all_gather(out, tt)
        return torch.stack(out).to(t.device)

    def broadcast_(self, t: Tensor, src: int = 0) -> Tensor:
        if self.enabled:
            tt = t.to(self.device).contiguous()
            dist.broadcast(tt, src=src)
            if tt is not t:
                t.copy_(tt)
        return t


def _use_distributed(distributed: bool | None) -> bool:
    avail = dist.is_available() and dist.is_initialized()
    if distributed is None:
        return bool(avail and dist.get_world_size() > 1)
    if distributed:
        if not avail:
            raise ValueError("distributed=True but torch.distributed is not initialized")
        return dist.get_world_size() > 1
    return False


# ----------------------------------------------------------------------------------------------
# k-means++ (greedy, exact in DDP)
# ----------------------------------------------------------------------------------------------
def _fetch_rows(x: Tensor, local_idx: list[int | None], comm: _Comm) -> Tensor:
    """Rows ``x[local_idx[j]]`` from whichever rank owns them (``None`` = not mine), on all ranks."""
    m, d = len(local_idx), x.shape[1]
    mine = [(j, i) for j, i in enumerate(local_idx) if i is not None]
    if not comm.enabled:
        return x[torch.tensor([i for _, i in mine], device=x.device, dtype=torch.long)]
    buf = torch.zeros((m, d), dtype=torch.float64, device=x.device)
    if mine:
        js = torch.tensor([j for j, _ in mine], device=x.device, dtype=torch.long)
        ii = torch.tensor([i for _, i in mine], device=x.device, dtype=torch.long)
        buf[js] = x[ii].to(torch.float64)
    comm.all_reduce_(buf)
    return buf.to(x.dtype)


def _locate(
    r: Tensor, rank_pots: Tensor, local_cum: Tensor, counts: list[int], comm: _Comm
) -> list[int | None]:
    """For each target ``r`` in the global cumulative potential, the local row index if this
    rank owns it (else None).  Semantics of a single global ``searchsorted(cum, r, right=True)``
    clipped to the last row."""
    rank_cum = torch.cumsum(rank_pots, 0)
    owners = torch.searchsorted(rank_cum, r, right=True).tolist()
    last_nonempty = max(i for i, c in enumerate(counts) if c > 0)
    out: list[int | None] = []
    rr = r.tolist()
    for j, owner in enumerate(owners):
        if owner >= len(counts):  # r beyond the total (rounding / zero potential): last row
            owner, local = last_nonempty, counts[last_nonempty] - 1
            out.append(local if owner == comm.rank else None)
            continue
        if owner != comm.rank:
            out.append(None)
            continue
        offset = rank_cum[owner - 1].item() if owner > 0 else 0.0
        t = torch.tensor([rr[j] - offset], dtype=torch.float64, device=local_cum.device)
        local = int(torch.searchsorted(local_cum, t, right=True).item())
        out.append(min(local, counts[owner] - 1))
    return out


def _sum_last_float64(t: Tensor, elems: int = 1 << 20) -> Tensor:
    """``t.sum(-1, dtype=torch.float64)`` over column blocks of about ``elems`` elements: on the CPU the float64 sum
    of a float32 tensor first casts all of it, a float64 copy twice its size (k-means++'s candidate distances at
    1,000,000 rows, 8 restarts: 256 MB)."""
    if t.dtype == torch.float64 or t.numel() <= elems:
        return t.sum(-1, dtype=torch.float64)
    cols = max(1, elems // max(1, t.numel() // t.shape[-1]))
    out = torch.zeros(t.shape[:-1], dtype=torch.float64, device=t.device)
    for s in range(0, t.shape[-1], cols):
        out += t[..., s : s + cols].sum(-1, dtype=torch.float64)
    return out


def _candidate_block(x: Tensor, x_sq: Tensor, c: Tensor, c_sq: Tensor, start: int, cols: int) -> Tensor:
    """``(m, cols)`` clamped squared distances of the points ``c`` (``c_sq``: their squared norms) to the rows
    ``start:start + cols``: a column block of :func:`_sq_dists_small` (the same values: the GEMM's columns are
    independent)."""
    out = torch.addmm(c_sq, c, x[start : start + cols].t(), alpha=-2.0)
    return out.add_(x_sq[start : start + cols]).clamp_min_(0)


def _search_cumsum(w: Tensor, targets: Tensor, cols: int) -> Tensor:
    """``searchsorted(cumsum(w, 1, dtype=float64), targets, right=True)`` clipped to the last column, for
    non-negative ``w (R, N)`` and ``targets (R, T)``, over column blocks of ``cols``: no float64 ``(R, N)`` copy.
    Bit for bit the same: each block's cumulative sum starts from the last one's end (a sequential sum)."""
    r, n = w.shape
    cols = max(1, cols)
    idx = torch.full(targets.shape, max(n - 1, 0), dtype=torch.long, device=w.device)
    pending = torch.ones(targets.shape, dtype=torch.bool, device=w.device)
    carry = torch.zeros((r, 1), dtype=torch.float64, device=w.device)
    for s in range(0, n, cols):
        # [carry, w_s, w_s+1, ...]: its cumulative sums are the global ones from s - 1 on
        cum = torch.cat([carry, w[:, s : s + cols].to(torch.float64)], 1).cumsum_(1)
        # a pending target is >= carry: the count of values <= it, less the carry, is its row in this block
        pos = torch.searchsorted(cum, targets, right=True) - 1
        hit = pending & (pos < cum.shape[1] - 1)
        idx = torch.where(hit, pos + s, idx)
        pending &= ~hit
        carry = cum[:, -1:]
        if not bool(pending.any()):
            break
    return idx


def _kmeans_plusplus(
    x: Tensor,
    x_sq: Tensor,
    k: int,
    gen: torch.Generator,
    comm: _Comm,
    counts: list[int],
    n_runs: int = 1,
) -> Tensor:
    """Greedy k-means++ seeds of ``n_runs`` restarts at once, ``(n_runs, k, d)``.

    The runs are seeded in lockstep (one distance GEMM for all their candidates per step), but
    each run's random numbers are drawn first, run after run, in the order in which seeding the
    runs one after another draws them (a randint, then ``n_trials`` uniforms per center); seeding
    is the only consumer of ``gen``, so the seeds do not depend on how the restarts are batched.
    """
    n, d = x.shape
    n_total = sum(counts)
    offset = sum(counts[: comm.rank])
    n_trials = 2 + int(math.log(k))
    dev = x.device
    firsts, draws = [], []
    for _ in range(n_runs):
        firsts.append(int(torch.randint(n_total, (1,), generator=gen).item()))
        draws.append([torch.rand(n_trials, generator=gen, dtype=torch.float64) for _ in range(1, k)])
    centers = torch.empty((n_runs, k, d), dtype=x.dtype, device=dev)

    centers[:, 0] = _fetch_rows(x, [g - offset if 0 <= g - offset < n else None for g in firsts], comm)
    closest = _sq_dists_small(x, x_sq, centers[:, 0])  # (R, N)
    rank_pots = comm.all_gather(_sum_last_float64(closest)).cpu()  # (world, R)

    # the candidates' distances to every row in column blocks of _SEED_BLOCK_ELEMS (restarts x trials x columns): the
    # whole (restarts x trials x N) block and the float64 cumulative sum of `closest` were the largest allocations of a
    # k-means (1,000,000 rows, 8 restarts: 122 + 61 MB). A second pass over the same blocks (the same GEMM shapes:
    # the same values, bit for bit) updates `closest` with the chosen candidates.
    m = n_runs * n_trials
    cols = max(1, _SEED_BLOCK_ELEMS // m)
    rows_of_best = torch.arange(n_runs, device=dev) * n_trials
    for c in range(1, k):
        u = torch.stack([draws[j][c - 1] for j in range(n_runs)])  # (R, n_trials)
        targets = u * rank_pots.sum(0).unsqueeze(1)
        if not comm.enabled:
            # single process: one global searchsorted (r beyond the total -> last row)
            idx = _search_cumsum(closest, targets.to(dev), _SEED_BLOCK_ELEMS // n_runs)
            cand = x[idx.reshape(-1)]
        else:
            local_idx: list[int | None] = []
            for j in range(n_runs):
                local_cum = torch.cumsum(closest[j], 0, dtype=torch.float64)
                local_idx += _locate(targets[j], rank_pots[:, j].contiguous(), local_cum, counts, comm)
                del local_cum
            cand = _fetch_rows(x, local_idx, comm)
        cf = cand.reshape(m, d)
        c_sq = (cf * cf).sum(1, keepdim=True)
        local_pots = torch.zeros((n_runs, n_trials), dtype=torch.float64, device=dev)
        for s in range(0, n, cols):
            dc = _candidate_block(x, x_sq, cf, c_sq, s, cols).view(n_runs, n_trials, -1)
            torch.minimum(dc, closest[:, s : s + cols].unsqueeze(1), out=dc)
            local_pots += dc.sum(-1, dtype=torch.float64)
        pots = comm.all_gather(local_pots).cpu()  # (world, R, n_trials)
        best = torch.argmin(pots.sum(0), 1)  # (R,), on CPU
        rank_pots = pots[:, torch.arange(n_runs), best].contiguous()  # (world, R)
        chosen = rows_of_best + best.to(dev)
        for s in range(0, n, cols):
            dc = _candidate_block(x, x_sq, cf, c_sq, s, cols)[chosen]
            block = closest[:, s : s + cols]
            torch.minimum(block, dc, out=dc)
            block.copy_(dc)
        centers[:, c] = cf[chosen]
    return comm.broadcast_(centers, 0)


# ----------------------------------------------------------------------------------------------
# Lloyd
# ----------------------------------------------------------------------------------------------
def _dist_to_own(x: Tensor, centers: Tensor, labels: Tensor, chunk_size: int) -> Tensor:
    """``||x_i - c_{label_i}||^2`` (exact difference, as scikit-learn's repair uses)."""
    out = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for s in range(0, x.shape[0], chunk_size):
        out[s : s + chunk_size] = (x[s : s + chunk_size] - centers[labels[s : s + chunk_size]]).pow(2).sum(1)
    return out


def _relocate_empty(
    sums: Tensor,
    counts: Tensor,
    empty: list[int],
    x: Tensor,
    centers: Tensor,
    labels: Tensor,
    comm: _Comm,
    offset: int,
    chunk_size: int,
) -> None:
    """sklearn-style repair: move each empty cluster onto one of the globally farthest points
    (distance to the center they were assigned to), taking that point out of its old cluster."""
    n, d = x.shape
    n_empty = len(empty)
    m = min(n_empty, n)
    cand = torch.zeros((n_empty, d + 3), dtype=torch.float64, device=x.device)
    cand[:, 0] = -math.inf
    cand[:, 1] = float(2**53)
    if m > 0:
        dist_to_own = _dist_to_own(x, centers, labels, chunk_size)
        order = torch.sort(dist_to_own, descending=True, stable=True).indices[:m]
        cand[:m, 0] = dist_to_own[order].to(torch.float64)
        cand[:m, 1] = (order + offset).to(torch.float64)
        cand[:m, 2] = labels[order].to(torch.float64)
        cand[:m, 3:] = x[order].to(torch.float64)
    allc = comm.all_gather(cand).reshape(-1, d + 3)
    allc = allc[torch.sort(allc[:, 1], stable=True).indices]  # global index ascending
    allc = allc[torch.sort(allc[:, 0], descending=True, stable=True).indices][:n_empty]
    old_ids = allc[:, 2].long().tolist()
    for j, new_id in enumerate(empty):
        old_id, p = old_ids[j], allc[j, 3:]
        sums[old_id] -= p
        counts[old_id] -= 1
        sums[new_id] = p
        counts[new_id] = 1


def _rows_per_chunk(chunk_size: int, runs: int) -> int:
    """Rows per E-step chunk for ``runs`` batched runs: ``chunk_size // runs`` (memory bound),
    rounded down to a multiple of 64 when that is possible (aligned rows: faster GEMM/passes)."""
    rows = max(1, chunk_size // runs)
    return rows - rows % 64 if rows >= 64 else rows


def _means(sums: Tensor, cnt: Tensor, old: Tensor) -> Tensor:
    """Cluster means from sums ``(..., K, d)`` and counts ``(..., K)``; an empty cluster keeps its old center."""
    return torch.where((cnt > 0).unsqueeze(-1), sums / cnt.clamp_min(1).unsqueeze(-1), old)


def _accelerated(x: Tensor) -> bool:
    """Whether ``x`` lives on an accelerator (GPU): there the Lloyd loop is bound by kernel launches and host
    synchronizations, not by arithmetic, and takes the fused / dense paths (:func:`_e_step_batch`,
    :func:`_dense_stats_batch`); on the CPU the cheaper-arithmetic paths win."""
    return x.device.type != "cpu"


def _e_step_batch(x: Tensor, centers: Tensor, chunk_size: int, labels: Tensor, vals: Tensor | None = None) -> None:
    """Nearest centers of ``R`` runs at once: ``centers (R, K, d)`` -> ``labels (R, N)`` (lowest index on
    exact ties) and, if given, ``vals (R, N)`` = ``min_k(||c_k||^2 - 2 x.c_k)``.

    The distances of a chunk are one ``(R*K, rows)`` block, ``C @ x_chunk^T`` (a wide GEMM, several times
    faster on CPU than the skinny ``(rows, K)`` one); ``rows = chunk_size // R`` keeps the memory bound
    (``chunk_size x K`` elements). The argmin along the centers is taken with two cheap vectorized minima
    instead of ``argmin`` (slow on CPU): with ``m = min_k d_k``, ``label = min_k (K * [d_k > m] + k)`` is the
    first ``k`` with ``d_k == m`` (exact: small integers in floating point). On an accelerator both come from
    one ``torch.min`` instead (also the first minimizer): one kernel for five. So do half-precision rows, whose
    floats hold whole numbers exactly only up to 256 (bfloat16) or 2048 (float16): the trick's ``2K - 1`` would
    not be.
    """
    r, k, d = centers.shape
    cf = centers.reshape(r * k, d)
    c_sq = (cf * cf).sum(1, keepdim=True)
    xt = x.t()
    rows = _rows_per_chunk(chunk_size, r)
    fused = _accelerated(x) or x.dtype in (torch.float16, torch.bfloat16)
    ks = None if fused else torch.arange(k, dtype=x.dtype, device=x.device).view(1, k, 1)
    for s in range(0, x.shape[0], rows):
        dist = torch.addmm(c_sq, cf, xt[:, s : s + rows], alpha=-2.0).view(r, k, -1)
        if fused:  # one reduction kernel for values and first minimizers (fast on a GPU, slow on a CPU)
            m, labels[:, s : s + rows] = torch.min(dist, 1)
            if vals is not None:
                vals[:, s : s + rows] = m
            continue
        m = torch.amin(dist, 1, keepdim=True)
        if vals is not None:
            vals[:, s : s + rows] = m.squeeze(1)
        torch.gt(dist, m, out=dist)
        labels[:, s : s + rows] = torch.amin(dist.mul_(k).add_(ks), 1)


def _update_sums_batch(
    x: Tensor, labels: Tensor, labels_old: Tensor, sums: Tensor, cnt: Tensor, first: bool, chunk_size: int
) -> Tensor:
    """Bring the local float64 per-cluster sums ``(R*K, d)`` and counts ``(R*K,)`` (consistent
    with ``labels_old``, ``(R, N)``) up to date with ``labels``; returns the number of changed
    labels per run (float64 ``(R,)``).

    Only the rows whose label changed are moved (subtracted from the old cluster, added to the
    new one): after the first few Lloyd iterations that is a small fraction of the data, so this
    costs far less than a full scatter of all rows.  In the ``first`` iteration (``labels_old``
    is -1) the sums are computed from scratch.  float64 accumulation of float32/float64 rows:
    the drift of the running sums is at the level of float64 rounding.
    """
    r, n = labels.shape
    k = cnt.shape[0] // r
    dev = x.device
    base = (torch.arange(r, device=dev) * k).unsqueeze(1)
    if first:
        sums.zero_()
        cnt.zero_()
        rows = _rows_per_chunk(chunk_size, r)
        for s in range(0, n, rows):
            flat = (labels[:, s : s + rows] + base).reshape(-1)
            xs = x[s : s + rows].to(torch.float64)
            sums.index_add_(0, flat, xs.repeat(r, 1))
            cnt += torch.bincount(flat, minlength=r * k).to(torch.float64)
        return torch.full((r,), float(n), dtype=torch.float64, device=dev)
    changed = torch.nonzero(labels != labels_old)  # (M, 2): run, row
    n_changed = torch.bincount(changed[:, 0], minlength=r).to(torch.float64)
    for s in range(0, changed.shape[0], chunk_size):
        run, row = changed[s : s + chunk_size].unbind(1)
        xs = x[row].to(torch.float64)
        new = labels[run, row] + run * k
        old = labels_old[run, row] + run * k
        sums.index_add_(0, new, xs)
        sums.index_add_(0, old, xs, alpha=-1)
        ones = torch.ones(row.shape[0], dtype=torch.float64, device=dev)
        cnt.index_add_(0, new, ones)
        cnt.index_add_(0, old, ones, alpha=-1)
    return n_changed


def _with_ones(x: Tensor) -> Tensor:
    """``[x | 1]`` in float64, ``(n, d + 1)``: one GEMM against it gives per-cluster sums and counts."""
    return torch.cat([x.to(torch.float64), torch.ones((x.shape[0], 1), dtype=torch.float64, device=x.device)], 1)


def _dense_stats_batch(x: Tensor, x1: Tensor | None, labels: Tensor, labels_old: Tensor, ks: Tensor, out: Tensor,
                       chunk_size: int) -> None:
    """:func:`_update_sums_batch` for an accelerator: the float64 per-cluster ``[sums | count]`` rows of ``R``
    runs recomputed from all rows as one-hot GEMMs against ``[x | 1]`` (``x1``, or built chunk by chunk when
    ``None``): no atomics, no data-dependent shapes, no host synchronization (the incremental update needs one to
    find the changed rows). Writes them to ``out[:R*K*(d+1)]`` (as ``(R*K, d+1)``) and the runs' numbers of
    changed labels to the next ``R`` elements. ``ks``: the cluster ids ``(1, K, 1)``, of ``labels``' dtype. Five
    kernels for one chunk: a GPU iteration is bound by launches."""
    r, n = labels.shape
    d1 = x.shape[1] + 1
    k = ks.shape[1]
    stats = out[: r * k * d1].view(r * k, d1)
    if n == 0:  # an empty DDP shard adds nothing to the all_reduce (``out`` comes from torch.empty)
        stats.zero_()
    rows = _rows_per_chunk(chunk_size, r)
    for s in range(0, n, rows):
        onehot = (labels[:, s : s + rows].unsqueeze(1) == ks).to(torch.float64).view(r * k, -1)
        xs = x1[s : s + rows] if x1 is not None else _with_ones(x[s : s + rows])
        if s == 0:
            torch.mm(onehot, xs, out=stats)
        else:
            stats.addmm_(onehot, xs)
    torch.sum(labels != labels_old, 1, dtype=torch.float64, out=out[r * k * d1 :])


def _lloyd_batch(
    x: Tensor,
    centers: Tensor,
    comm: _Comm,
    max_iter: int,
    tol_abs: float,
    chunk_size: int,
    offset: int,
    on_done,
) -> None:
    """Lloyd iterations of ``R`` independent runs advanced together (``centers (R, K, d)``).

    Every run follows exactly the single-run rules (sklearn's): it stops when no label changed -- its
    labels are then final, unless an empty cluster was repaired in this iteration --, or when its squared
    center shift is ``<= tol_abs``, or after ``max_iter`` iterations; its labels are then recomputed for the
    final centers. (Labels unchanged beside a repair: the repaired center took no point, as on data with
    fewer distinct points than K, and would not in any further iteration.)  A finished run is handed to
    ``on_done(run, centers, labels, n_iter)`` and dropped from the batch.

    Per iteration: one batched E-step, one M-step (incremental on the CPU, dense on an accelerator:
    :func:`_accelerated`), one ``all_reduce`` (DDP) and one host synchronization (counts, numbers of
    changed labels and shifts of all runs together); a run with an empty cluster costs an extra
    synchronization for its repair.
    """
    r, k, d = centers.shape
    n = x.shape[0]
    dev = x.device
    dense = _accelerated(x)
    run_ids = list(range(r))
    # int32 labels (cluster ids < K): half the memory of int64 (two (R, N) arrays: 128 MB at 1,000,000 rows, 8 runs)
    labels = torch.full((r, n), -1, dtype=torch.int32, device=dev)
    labels_old = torch.full((r, n), -1, dtype=torch.int32, device=dev)
    if dense:
        # [x | 1] once when the data is one chunk (as runs finish, chunks only grow): the float64 copy each
        # iteration made anyway, kept
        x1 = _with_ones(x) if n <= _rows_per_chunk(chunk_size, r) else None
        ks = torch.arange(k, dtype=labels.dtype, device=dev).view(1, k, 1)
    else:
        # local sums/counts, kept consistent with `labels_old` across iterations
        loc_sums = torch.zeros((r * k, d), dtype=torch.float64, device=dev)
        loc_cnt = torch.zeros(r * k, dtype=torch.float64, device=dev)
    for it in range(max_iter):
        r = len(run_ids)
        _e_step_batch(x, centers, chunk_size, labels)
        # global (all-reduced) sums / counts / numbers of changed labels of this iteration, in one buffer
        if dense:
            buf = torch.empty(r * k * (d + 1) + r, dtype=torch.float64, device=dev)
            _dense_stats_batch(x, x1, labels, labels_old, ks, buf, chunk_size)
            comm.all_reduce_(buf)
            stats = buf[: r * k * (d + 1)].view(r, k, d + 1)
            sums, cnt, n_changed = stats[..., :d], stats[..., d], buf[r * k * (d + 1) :]
        else:
            n_changed = _update_sums_batch(x, labels, labels_old, loc_sums, loc_cnt, it == 0, chunk_size)
            buf = torch.cat([loc_sums.view(r, k * d), loc_cnt.view(r, k), n_changed.view(r, 1)], 1)
            comm.all_reduce_(buf)
            sums = buf[:, : k * d].view(r, k, d)
            cnt, n_changed = buf[:, k * d : k * d + k], buf[:, k * d + k]
        old64 = centers.to(torch.float64)
        # an empty cluster's center here is a placeholder: that run is repaired and its centers recomputed below
        new_centers = (sums / cnt.clamp_min(1).unsqueeze(-1)).to(x.dtype)
        shift_t = (new_centers.to(torch.float64) - old64).pow(2).sum((1, 2))
        # counts, n_changed, shift of every run: one synchronization, then plain Python (no per-run tensor ops)
        host = torch.cat([cnt, n_changed.unsqueeze(1), shift_t.unsqueeze(1)], 1).tolist()
        done: list[int] = []
        for j in range(r):
            empty = [i for i, c in enumerate(host[j][:k]) if c == 0]
            if empty:
                # modifies the global copy only; the local sums stay consistent with the labels
                _relocate_empty(sums[j], cnt[j], empty, x, centers[j], labels[j], comm, offset, chunk_size)
                new_centers[j] = _means(sums[j], cnt[j], old64[j]).to(x.dtype)
                shift = float((new_centers[j].to(torch.float64) - old64[j]).pow(2).sum().item())
            else:
                shift = host[j][k + 1]
            unchanged = int(host[j][k]) == 0
            if unchanged and not empty:
                # labels unchanged (and no repair) => same sums => the new centers are the ones
                # the labels were computed with: labels already final
                on_done(run_ids[j], new_centers[j], labels[j], it + 1)
                done.append(j)
            elif unchanged or shift <= tol_abs or it + 1 == max_iter:
                lab = torch.empty(n, dtype=torch.int32, device=dev)
                _e_step(x, new_centers[j], chunk_size, lab, torch.empty(n, dtype=x.dtype, device=dev))
                on_done(run_ids[j], new_centers[j], lab, it + 1)
                done.append(j)
        centers = new_centers
        labels, labels_old = labels_old, labels
        if done:
            keep = [j for j in range(r) if j not in done]
            if not keep:
                return
            kt = torch.tensor(keep, dtype=torch.long, device=dev)
            centers, labels, labels_old = centers[kt], labels[kt], labels_old[kt]
            if not dense:
                kk = (kt.unsqueeze(1) * k + torch.arange(k, device=dev)).reshape(-1)
                loc_sums, loc_cnt = loc_sums[kk], loc_cnt[kk]
            run_ids = [run_ids[j] for j in keep]


def _exact_inertia(x: Tensor, centers: Tensor, labels: Tensor, chunk_size: int, comm: _Comm) -> float:
    acc = torch.zeros(1, dtype=torch.float64, device=x.device)
    for s in range(0, x.shape[0], chunk_size):
        diff = x[s : s + chunk_size] - centers[labels[s : s + chunk_size]]
        acc += diff.to(torch.float64).pow(2).sum()
    comm.all_reduce_(acc)
    return float(acc.item())


# ----------------------------------------------------------------------------------------------
# public entry point
# ----------------------------------------------------------------------------------------------
def kmeans(
    x: Tensor,
    n_clusters: int,
    *,
    n_init: int = 10,
    max_iter: int = 300,
    tol: float = 1e-4,
    init_centers: Tensor | None = None,
    seed: int | None = None,
    chunk_size: int | None = None,
    distributed: bool | None = None,
) -> KMeansResult:
    """K-means clustering (Lloyd, greedy k-means++ seeding), following scikit-learn's ``KMeans``.

    Args:
        x: ``(N, d)`` data (float32/float64; other dtypes are computed and returned in float32).
            In DDP mode: this rank's shard (sizes may differ, a shard may be empty).
        n_clusters: K, ``1 <= K <= N`` (N = global number of rows).
        n_init: number of k-means++ restarts; the lowest inertia wins.  Ignored with ``init_centers``.
        max_iter: maximum Lloyd iterations per run.
        tol: relative tolerance: stop when ``sum ||c_new - c_old||^2 <= tol * mean(var(x, 0))``
            (variance over the global data).  A run also stops when no label changed.
        init_centers: ``(K, d)`` warm start (single run).  In DDP mode rank 0's copy is used.
        seed: seed of the CPU ``torch.Generator`` used for seeding.  ``None``: drawn from torch's
            global RNG (rank 0's in DDP), so ``torch.manual_seed`` makes the call reproducible.
        chunk_size: rows per distance chunk (memory ``~ chunk_size x K``); None: 65536 on the CPU, on a GPU
            ``max(65536, 2**24 // K)`` (a 64 MiB float32 distance block: one chunk for 70,000 x 10 rows).
        distributed: ``None`` = use DDP mode iff torch.distributed is initialized with
            world size > 1; ``False`` = local only; ``True`` = require an initialized group.

    Seeding: exact distributed greedy k-means++ (see the module docstring): all ranks draw the
    same random numbers and select rows by *global* index / global cumulative potential, so a
    single-process run on the concatenation of the shards (in rank order) with the same
    ``seed`` picks the same seeds and yields the same centers up to float rounding.

    Returns:
        :class:`KMeansResult` (``labels`` are for the local ``x``; ``inertia`` is global).
    """
    # ---- argument checks that do not depend on the data (identical on all ranks) ----
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int):
        try:
            n_clusters = int(n_clusters)  # e.g. numpy ints
        except Exception as e:  # pragma: no cover
            raise ValueError(f"n_clusters must be an int, got {n_clusters!r}") from e
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be >= 1, got {n_clusters}")
    if int(n_init) < 1:
        raise ValueError(f"n_init must be >= 1, got {n_init}")
    if int(max_iter) < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if not (tol >= 0):
        raise ValueError(f"tol must be >= 0, got {tol}")
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if chunk_size is None:  # on a GPU, few large chunks: fewer kernel launches per iteration
        chunk_size = max(65536, _ACCEL_CHUNK_ELEMS // n_clusters) if _accelerated(x) else 65536
    chunk_size = _check_chunk_size(chunk_size)

    use_dist = _use_distributed(distributed)
    comm = _Comm(use_dist, x.device)

    # ---- data checks, decided identically on every rank ----
    is2d = x.dim() == 2
    n_local = x.shape[0] if is2d else 0
    d_local = x.shape[1] if is2d else -1
    if x.dtype not in (torch.float32, torch.float64):
        x = x.to(torch.float32)
    finite = bool(torch.isfinite(x).all().item()) if x.numel() else True
    drawn = int(torch.randint(0, 2**62, (1,)).item()) if seed is None else 0
    info = torch.tensor([n_local, d_local, int(is2d), int(finite), drawn], dtype=torch.long)
    allinfo = comm.all_gather(info)  # (world, 5) on CPU
    if not bool(allinfo[:, 2].all()):
        raise ValueError(
            f"x must be a 2-D tensor (N, d); got shape {tuple(x.shape)}"
            + (" on some rank" if use_dist else "")
        )
    dims = set(allinfo[:, 1].tolist())
    if len(dims) != 1:
        raise ValueError(f"all ranks must pass the same number of features, got {sorted(dims)}")
    d = dims.pop()
    if not bool(allinfo[:, 3].all()):
        raise ValueError("x contains non-finite values (NaN or inf)")
    counts = allinfo[:, 0].tolist()
    n_total = int(sum(counts))
    if n_clusters > n_total:
        raise ValueError(f"n_clusters={n_clusters} is larger than the number of samples N={n_total}")
    if d < 1:
        raise ValueError("x must have at least one feature")
    offset = int(sum(counts[: comm.rank]))
    if seed is None:
        seed = int(allinfo[0, 4].item())

    dtype, dev = x.dtype, x.device
    if init_centers is not None:
        if not isinstance(init_centers, Tensor) or tuple(init_centers.shape) != (n_clusters, d):
            raise ValueError(
                f"init_centers must have shape ({n_clusters}, {d}), "
                f"got {tuple(getattr(init_centers, 'shape', ()))}"
            )
        init = init_centers.detach().to(device=dev, dtype=dtype).clone()
        comm.broadcast_(init, 0)
        if not bool(torch.isfinite(init).all().item()):
            raise ValueError("init_centers contains non-finite values")

    # ---- global mean / variance (two passes, float64) ----
    with torch.no_grad():
        stats = torch.zeros(d + 1, dtype=torch.float64, device=dev)
        for s in range(0, n_local, chunk_size):
            stats[:d] += x[s : s + chunk_size].sum(0, dtype=torch.float64)
        comm.all_reduce_(stats)
        mean64 = stats[:d] / n_total
        var_acc = torch.zeros(d, dtype=torch.float64, device=dev)
        for s in range(0, n_local, chunk_size):
            var_acc += (x[s : s + chunk_size].to(torch.float64) - mean64).pow(2).sum(0)
        comm.all_reduce_(var_acc)
        tol_abs = float((var_acc / n_total).mean().item()) * float(tol)

        mean = mean64.to(dtype)
        xc = x.detach() - mean
        x_sq = (xc * xc).sum(1)

        gen = torch.Generator(device="cpu")
        gen.manual_seed(int(seed))

        best: tuple[float, int, Tensor, Tensor, int] | None = None

        def on_done(run: int, centers: Tensor, labels: Tensor, n_iter: int) -> None:
            nonlocal best
            inertia = _exact_inertia(xc, centers, labels, chunk_size, comm)
            # lowest inertia wins, ties go to the earliest restart (as when run one by one)
            if best is None or (inertia, run) < (best[0], best[1]):
                best = (inertia, run, centers.clone(), labels.clone(), n_iter)

        runs = 1 if init_centers is not None else int(n_init)
        # restarts are advanced together in batches (a few tensor ops per iteration for all of
        # them); a batch holds two (batch, N) int32 label arrays, kept under _BATCH_BYTES / 2 (batches
        # of as many runs as when they were int64: the same results)
        batch = max(1, min(runs, _BATCH_BYTES // max(1, 16 * n_total)))
        for first in range(0, runs, batch):
            nb = min(batch, runs - first)
            if init_centers is not None:
                c0 = (init - mean).unsqueeze(0)
            else:  # seeding draws from `gen` only, so batching does not change the seeds
                c0 = _kmeans_plusplus(xc, x_sq, n_clusters, gen, comm, counts, nb)
            _lloyd_batch(
                xc, c0, comm, int(max_iter), tol_abs, chunk_size, offset,
                lambda run, c, lab, it, first=first: on_done(first + run, c, lab, it),
            )

        assert best is not None
        inertia, _, centers, labels, n_iter = best
        return KMeansResult(centers=centers + mean, labels=labels.long(), inertia=inertia, n_iter=n_iter)
