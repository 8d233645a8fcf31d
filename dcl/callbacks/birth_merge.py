"""Cluster birth, merge and death for any method whose clustering state is a mixture: K changes in training.

Every decision is a model-selection test on the *sufficient statistics* (count, sum, sum of outer products)
of the components' hard-assigned data, so that data-parallel training only all_reduces them:

* the maximized log-likelihood of n points under their fitted Gaussian is a function of the statistics,
  ``L(n, S1, S2) = -n/2 (log det C + d log(2 pi) + d)`` with ``C = S2/n - (S1/n)(S1/n)^T`` (+ a small floor);
* **death**: a component whose weight ``n_k / N`` is below ``min_weight`` is removed and its data (its
  statistics) go to the nearest surviving component (Euclidean distance between the means);
* **merge**: components k, l are merged when one Gaussian explains their union better than two, by BIC:
  ``L(k u l) - [L(k) + L(l) + n_k log(n_k / n_kl) + n_l log(n_l / n_kl)] + penalty * p/2 log N > 0``
  (p free parameters of one component saved: mean, covariance, weight); greedy on the best score, each
  component at most once per round;
* **birth**: every component is split in two by a 2-means run restricted to its data, started along its
  principal axis (mu +- sqrt(lambda_max) v_max; deterministic, so every rank runs the same), all components at
  once with one all_reduce per iteration; the split is kept when the two children explain the data better
  than the parent by the same BIC criterion, each child keeps at least ``min_weight`` of the data, and K stays
  <= ``max_components``; best gains first.

``covariance="full"`` (default) tests with full-covariance Gaussians although the mixtures they serve may be
diagonal: measured on autoencoder embeddings (Digits, USPS), diagonal Gaussians split every elongated, correlated
cluster (K = 17-36 found for 10 classes whatever the penalty; ad hoc runs, not recorded), full ones do not (K =
9-12); the statistics are K x d x d (d = 10: 100 numbers per component), still cheap to all_reduce. The split of a
single Gaussian is rejected by this criterion (a hard split of a Gaussian along its principal axis gains 1/2
log(1/(1 - 2/pi)) = 0.51 nats per point, the assignment costs log 2 = 0.69), so births do not fragment a well-fit
cluster, and the merge test merges back what a split should not have done. A DP mixture's
variational update afterwards re-weights the result.

DDP: statistics are all_reduced; the scores are computed from them on every rank and rank 0's are broadcast,
so every rank takes the same decisions and holds the same K. The callback's state (K history, counts of
births, merges and deaths, calls) is in ``state_dict``; K itself lives in the method's buffers.

The method must provide (the mixture protocol):

* ``assign(z) -> (N, K)``: responsibilities (their argmax is the hard assignment);
* ``set_mixture_stats(n, s1, s2)``: rebuild the mixture from per-component statistics (K = ``len(n)``; s2 the
  per-dimension sums of squares, (K, d));
* ``embed_all(gather=False)`` and ``clustering_active`` (from ``ClusteringMethod``);
* optionally ``max_components`` (upper bound T on K).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from dcl.cluster.dpgmm import LOG_2PI
from dcl.distributed import all_reduce_sum_, broadcast_, is_distributed
from dcl.callbacks.plots import plots_folder
from dcl.files import atomic_write
from dcl.method import log_images_now, log_metrics_now


#: samples per block of the float64 per-sample work (a block of 65536 rows: ~56 MB at d = 10 with full S2), so that
#: memory stays bounded for any N (unchunked: ~0.9 GB per million samples for full S2, 4 GB for mixture_labels at K 50)
CHUNK_ROWS = 65536


# -- statistics ------------------------------------------------------------------------------------------------
def hard_stats(z: Tensor, labels: Tensor, k: int, distributed: bool = False,
               full: bool = False, chunk_rows: int = CHUNK_ROWS) -> tuple[Tensor, Tensor, Tensor]:
    """(n, S1, S2) of the data assigned to each of ``k`` components (float64), summed over ranks; S2 is
    sum z^2 (K, d), or sum z z^T (K, d, d) when ``full``."""
    d = z.shape[1]
    packed = z.new_zeros(k, 1 + d + (d * d if full else d), dtype=torch.float64)
    for start in range(0, len(z), chunk_rows):
        zc = z[start:start + chunk_rows].double()
        second = (zc[:, :, None] * zc[:, None, :]).reshape(len(zc), d * d) if full else zc.pow(2)
        packed.index_add_(0, labels[start:start + chunk_rows], torch.cat([torch.ones_like(zc[:, :1]), zc, second], 1))
    if distributed:
        all_reduce_sum_(packed)
    s2 = packed[:, 1 + d:]
    return packed[:, 0], packed[:, 1:1 + d], s2.reshape(k, d, d) if full else s2


def diag_of(s2: Tensor) -> Tensor:
    """The per-dimension sums of squares, from diagonal (K, d) or full (K, d, d) statistics."""
    return s2.diagonal(dim1=-2, dim2=-1) if s2.ndim == 3 else s2


def variance_floor(n: Tensor, s1: Tensor, s2: Tensor) -> Tensor:
    """The per-dimension floor added to every fitted (co)variance, from all the data's statistics: 1e-3 of the
    data's variance, and at least 1e-8 of its second moment. The float64 rounding of ``S2/n - mean^2`` is a
    fraction of the second moment (measured up to 5e-11 with 10^6 samples), so with (near-)constant embeddings
    the "variance" is that rounding, may be negative, and a floor below it leaves covariances that are not
    positive-definite (a crash in Cholesky)."""
    total = n.sum().clamp_min(1.0)
    second = diag_of(s2).sum(0) / total
    var = (second - (s1.sum(0) / total).pow(2)).clamp_min(0.0)
    return (1e-3 * var + 1e-8 * second).clamp_min(1e-15)  # the last: a dimension that is exactly 0 everywhere


def _mean_cov(n: Tensor, s1: Tensor, s2: Tensor, var_floor: Tensor) -> tuple[Tensor, Tensor]:
    safe = n.clamp_min(1.0)[:, None]
    mean = s1 / safe
    if s2.ndim == 3:
        cov = s2 / safe[:, :, None] - mean[:, :, None] * mean[:, None, :]
        return mean, cov + torch.diag_embed(var_floor.expand_as(mean))
    return mean, (s2 / safe - mean.pow(2)).clamp_min(0.0) + var_floor


def n_params(d: int, full: bool) -> int:
    """Free parameters of one component: mean, (co)variance and weight."""
    return d + (d * (d + 1) // 2 if full else d) + 1


def gaussian_loglik(n: Tensor, s1: Tensor, s2: Tensor, var_floor: Tensor) -> Tensor:
    """Maximized log-likelihood of the data of each component under its fitted Gaussian (diagonal, or full
    when S2 is (K, d, d))."""
    mean, cov = _mean_cov(n, s1, s2, var_floor)
    d = mean.shape[1]
    logdet = torch.linalg.cholesky(cov).diagonal(dim1=-2, dim2=-1).log().sum(-1) * 2 if s2.ndim == 3 \
        else cov.log().sum(1)
    return -0.5 * n * (logdet + d * (LOG_2PI + 1.0))


def _xlogy(x: Tensor, y: Tensor) -> Tensor:
    return torch.where(x > 0, x * y.clamp_min(1e-300).log(), torch.zeros_like(x))


def mixture_labels(z: Tensor, n: Tensor, s1: Tensor, s2: Tensor, var_floor: Tensor,
                   chunk_rows: int = CHUNK_ROWS) -> Tensor:
    """Hard assignment of ``z`` to the Gaussian mixture (diagonal, or full when S2 is (K, d, d)) fitted to the
    statistics."""
    mean, cov = _mean_cov(n, s1, s2, var_floor)
    chol = torch.linalg.cholesky(cov) if s2.ndim == 3 else None  # (K, d, d)
    logdet = 2 * chol.diagonal(dim1=-2, dim2=-1).log().sum(-1) if chol is not None else cov.log().sum(1)
    base = (n / n.sum()).clamp_min(1e-300).log() - 0.5 * logdet
    labels = []
    for start in range(0, len(z), chunk_rows):
        zd = z[start:start + chunk_rows].double()
        if chol is not None:
            diff = (zd[None] - mean[:, None, :]).transpose(1, 2)  # (K, d, rows)
            quad = torch.linalg.solve_triangular(chol, diff, upper=False).pow(2).sum(1).T  # (rows, K)
        else:
            quad = zd.pow(2) @ (1 / cov).T - 2 * zd @ (mean / cov).T + (mean.pow(2) / cov).sum(1)
        labels.append((base - 0.5 * quad).argmax(1))
    return torch.cat(labels) if labels else torch.empty(0, dtype=torch.long, device=z.device)


# -- the moves -------------------------------------------------------------------------------------------------
@dataclass
class BirthMergeResult:
    """New per-component statistics and what happened."""

    n: Tensor
    s1: Tensor
    s2: Tensor
    births: int = 0
    merges: int = 0
    deaths: int = 0
    k_history: list[int] = field(default_factory=list)

    @property
    def k(self) -> int:
        return int(self.n.numel())


def _two_means(z: Tensor, labels: Tensor, n: Tensor, s1: Tensor, s2: Tensor, iters: int,
               distributed: bool) -> tuple[Tensor, Tensor, Tensor]:
    """2-means inside every component at once; returns the children's statistics (2K, ...): rows 2k, 2k + 1."""
    k, d = s1.shape
    full = s2.ndim == 3
    mean, cov = _mean_cov(n, s1, s2, torch.zeros_like(s1[0]))
    if full:  # along the principal axis
        evals, evecs = torch.linalg.eigh(cov)
        step = evecs[:, :, -1] * evals[:, -1:].clamp_min(0.0).sqrt()
    else:  # along the axis of largest variance
        axis = cov.argmax(1)
        step = torch.zeros_like(mean)
        step[torch.arange(k), axis] = cov[torch.arange(k), axis].sqrt()
    centers = torch.stack([mean - step, mean + step], dim=1)  # (K, 2, d)
    zd = z.double()
    side = torch.zeros(len(z), dtype=torch.long, device=z.device)
    for _ in range(max(iters, 1)):
        c = centers[labels]  # (N, 2, d)
        dist = (zd[:, None, :] - c).pow(2).sum(-1)
        side = dist.argmin(1)
        cn, cs1, _ = hard_stats(zd, labels * 2 + side, 2 * k, distributed)  # diagonal: cheaper
        new = (cs1 / cn.clamp_min(1.0)[:, None]).view(k, 2, d)
        keep = (cn.view(k, 2) > 0)[..., None]
        centers = torch.where(keep, new, centers)
    return hard_stats(zd, labels * 2 + side, 2 * k, distributed, full)


def birth_merge_round(z: Tensor, labels: Tensor, k: int, *, min_weight: float = 0.01, max_components: int = 50,
                      penalty: float = 1.0, min_gain: float = 0.0, split: bool = True, merge: bool = True,
                      split_iters: int = 10, covariance: str = "full", var_floor: Tensor | None = None,
                      distributed: bool | None = None) -> BirthMergeResult:
    """One round of death, merge and birth on the hard assignment ``labels`` (this rank's shard of ``z``)."""
    if distributed is None:
        distributed = is_distributed()
    if covariance not in ("full", "diag"):
        raise ValueError(f"covariance must be 'full' or 'diag', got {covariance!r}")
    full = covariance == "full"
    n, s1, s2 = hard_stats(z, labels, k, distributed, full)
    total = float(n.sum())
    d = z.shape[1]
    if var_floor is None:
        var_floor = variance_floor(n, s1, s2)
    cost = penalty * 0.5 * n_params(d, full) * math.log(max(total, 2.0))
    result = BirthMergeResult(n, s1, s2)

    # death: too small -> its data go to the nearest surviving component
    alive = n / total >= min_weight
    if not bool(alive.any()):
        alive[n.argmax()] = True
    dead = (~alive).nonzero().flatten()
    if len(dead):
        means = s1 / n.clamp_min(1.0)[:, None]
        live = alive.nonzero().flatten()
        nearest = live[torch.cdist(means[dead], means[live]).argmin(1)]
        n, s1, s2 = n.clone(), s1.clone(), s2.clone()
        n.index_add_(0, nearest, n[dead])
        s1.index_add_(0, nearest, s1[dead])
        s2.index_add_(0, nearest, s2[dead])
        remap = torch.full((k,), -1, dtype=torch.long, device=z.device)
        remap[live] = torch.arange(len(live), device=z.device)
        remap[dead] = remap[nearest]
        labels = remap[labels]
        n, s1, s2 = n[live], s1[live], s2[live]
        result.deaths = len(dead)
        k = len(live)

    # merge: greedy on the best BIC gains, each component at most once
    touched = torch.zeros(k, dtype=torch.bool, device=z.device)
    if merge and k > 1:
        ll = gaussian_loglik(n, s1, s2, var_floor)
        iu = torch.triu_indices(k, k, 1, device=z.device)
        a, b = iu[0], iu[1]
        nab = n[a] + n[b]
        joint = gaussian_loglik(nab, s1[a] + s1[b], s2[a] + s2[b], var_floor)
        mix = _xlogy(n[a], n[a] / nab) + _xlogy(n[b], n[b] / nab)
        gain = joint - (ll[a] + ll[b] + mix) + cost + min_gain * nab
        gain = broadcast_(gain.contiguous())
        target = torch.arange(k, device=z.device)
        for idx in torch.argsort(gain, descending=True).tolist():
            if gain[idx] <= 0:
                break
            i, j = int(a[idx]), int(b[idx])
            if touched[i] or touched[j]:
                continue
            touched[i] = touched[j] = True
            target[j] = i
            result.merges += 1
        if result.merges:
            keep = (target == torch.arange(k, device=z.device)).nonzero().flatten()
            n2 = torch.zeros_like(n).index_add_(0, target, n)
            s12 = torch.zeros_like(s1).index_add_(0, target, s1)
            s22 = torch.zeros_like(s2).index_add_(0, target, s2)
            remap = torch.full((k,), -1, dtype=torch.long, device=z.device)
            remap[keep] = torch.arange(len(keep), device=z.device)
            labels = remap[target[labels]]
            n, s1, s2, touched = n2[keep], s12[keep], s22[keep], touched[keep]
            k = len(keep)

    # birth: split the components that two Gaussians explain better than one
    if split and k < max_components:
        cn, cs1, cs2 = _two_means(z, labels, n, s1, s2, split_iters, distributed)
        cll = gaussian_loglik(cn, cs1, cs2, var_floor).view(k, 2)
        cnv = cn.view(k, 2)
        mix = _xlogy(cnv, cnv / n.clamp_min(1.0)[:, None]).sum(1)
        gain = cll.sum(1) + mix - gaussian_loglik(n, s1, s2, var_floor) - cost - min_gain * n
        ok = (cnv.min(1).values / total >= min_weight) & ~touched
        gain = torch.where(ok, gain, torch.full_like(gain, -math.inf))
        gain = broadcast_(gain.contiguous())
        chosen = [i for i in torch.argsort(gain, descending=True).tolist() if gain[i] > 0]
        chosen = chosen[:max_components - k]
        if chosen:
            split_mask = torch.zeros(k, dtype=torch.bool, device=z.device)
            split_mask[chosen] = True
            rows_n, rows_s1, rows_s2 = [n[~split_mask]], [s1[~split_mask]], [s2[~split_mask]]
            idx = torch.tensor(chosen, device=z.device)
            for side in (0, 1):
                rows_n.append(cn[2 * idx + side])
                rows_s1.append(cs1[2 * idx + side])
                rows_s2.append(cs2[2 * idx + side])
            n, s1, s2 = torch.cat(rows_n), torch.cat(rows_s1), torch.cat(rows_s2)
            result.births = len(chosen)
            k = len(n)
    result.n, result.s1, result.s2 = (broadcast_(t.contiguous()) for t in (n, s1, s2))
    result.k_history.append(k)
    return result


def birth_merge(z: Tensor, labels: Tensor, k: int, rounds: int = 1, **kwargs) -> BirthMergeResult:
    """Up to ``rounds`` rounds of :func:`birth_merge_round`, re-assigning the data to the new mixture (hard,
    to the Gaussians fitted to the statistics: full or diagonal, ``covariance``) between rounds; stops early when a
    round changes nothing."""
    distributed = kwargs.pop("distributed", None)
    if distributed is None:
        distributed = is_distributed()
    full = kwargs.get("covariance", "full") == "full"
    total = BirthMergeResult(*hard_stats(z, labels, k, distributed, full))
    for r in range(rounds):
        if r > 0:
            labels = mixture_labels(z, total.n, total.s1, total.s2, variance_floor(total.n, total.s1, total.s2))
            k = total.k
        step = birth_merge_round(z, labels, k, distributed=distributed, **kwargs)
        total.n, total.s1, total.s2 = step.n, step.s1, step.s2
        total.births += step.births
        total.merges += step.merges
        total.deaths += step.deaths
        total.k_history += step.k_history
        if step.births + step.merges + step.deaths == 0:
            break
    return total


# -- the callback ----------------------------------------------------------------------------------------------
class BirthMerge(Callback):
    """Birth, merge and death of mixture components during training (see the module docstring).

    Runs once right after the clustering phase starts (after the method's first mixture fit, ``first_rounds``
    rounds, so that the first epoch already trains with a sensible K), then at the end of every
    ``every_n_epochs``-th epoch of the clustering phase, or after every ``every_n_steps``-th training step
    (``rounds`` rounds). Logs ``train/births``, ``train/merges``, ``train/deaths`` (``train/k`` is the method's, every
    training epoch); keeps the K history (epoch, step, K after) in its state.

    A schedule in steps keeps the number of gradient steps between two moves independent of the data set's
    size (an epoch of a million samples is a long time between moves). It is not a cure for a collapsing K: on
    MNIST (DPGMM, penalty 12) moves every 37 steps instead of every 274 did not stop K collapsing at gamma
    0.01, and at gamma 0.001 they made K collapse (8-10 for 4 epochs, then 2 and 1 in the 5th) where epoch-end
    moves keep 9 / 8
    (``benchmarks/results/dpgmm_mnist.md``): each move may merge greedily, so more moves allow more merges.

    Args:
        every_n_epochs: epochs between birth/merge steps (1 when neither this nor ``every_n_steps`` is given).
        every_n_steps: training steps between birth/merge steps, instead of ``every_n_epochs``.
        min_weight: components with a smaller fraction of the data die (merge into their nearest neighbour);
            children of a split must each keep at least this fraction.
        max_components: upper bound T on K (the method's ``max_components`` wins when it has one).
        penalty: multiplier of the BIC penalty (1: BIC; larger: fewer births, more merges).
        min_gain: nats per data point a split must gain beyond the BIC penalty, and a merge may lose (0). Unlike
            the penalty (~log N in all), it scales with the component's data, so one value serves data sets of
            any size.
        rounds, first_rounds: rounds per step (each round: deaths, merges, births, re-assignment).
        split, merge: enable births / merges (deaths are always on).
        split_iters: 2-means iterations of the split proposals.
        covariance: ``full`` or ``diag`` Gaussians in the tests.
    """

    def __init__(self, every_n_epochs: int | None = None, min_weight: float = 0.01, max_components: int = 50,
                 penalty: float = 1.0, rounds: int = 1, first_rounds: int = 10, split: bool = True,
                 merge: bool = True, split_iters: int = 10, covariance: str = "full", min_gain: float = 0.0,
                 every_n_steps: int | None = None) -> None:
        if covariance not in ("full", "diag"):
            raise ValueError(f"BirthMerge: covariance must be 'full' or 'diag', got {covariance!r}")
        if every_n_epochs is not None and every_n_steps is not None:
            raise ValueError("BirthMerge: give every_n_epochs or every_n_steps, not both")
        if every_n_epochs is None and every_n_steps is None:
            every_n_epochs = 1
        if any(n is not None and n < 1 for n in (every_n_epochs, every_n_steps)) or rounds < 1 or first_rounds < 0:
            raise ValueError("BirthMerge needs every_n_epochs or every_n_steps >= 1, rounds >= 1 and "
                             "first_rounds >= 0")
        if not 0.0 <= min_weight < 0.5:
            raise ValueError(f"BirthMerge: min_weight must be in [0, 0.5), got {min_weight}")
        if max_components < 1 or penalty < 0 or min_gain < 0:
            raise ValueError("BirthMerge needs max_components >= 1, penalty >= 0 and min_gain >= 0")
        self.every_n_epochs = every_n_epochs
        self.every_n_steps = every_n_steps
        self.min_weight = min_weight
        self.max_components = max_components
        self.penalty = penalty
        self.min_gain = min_gain
        self.rounds = rounds
        self.first_rounds = first_rounds
        self.split = split
        self.merge = merge
        self.split_iters = split_iters
        self.covariance = covariance
        self.calls = 0
        self.start_epoch = -1
        self.start_step = -1
        self.births = self.merges = self.deaths = 0
        self.history: list[list[int]] = []  # [epoch, global_step, K after]

    @property
    def state_key(self) -> str:
        if self.every_n_steps is not None:
            return f"BirthMerge{{every_n_steps={self.every_n_steps}}}"
        return f"BirthMerge{{every_n_epochs={self.every_n_epochs}}}"

    def _limit(self, pl_module) -> int:
        return int(getattr(pl_module, "max_components", self.max_components) or self.max_components)

    @torch.no_grad()
    def step(self, trainer, pl_module, rounds: int) -> BirthMergeResult:
        """One birth/merge step on the current embeddings and mixture; applies the result to the method."""
        z = pl_module.embed_all(gather=False)
        labels = pl_module.assign(z).argmax(1)
        k = pl_module.n_clusters
        res = birth_merge(z, labels, k, rounds=rounds, min_weight=self.min_weight,
                          max_components=self._limit(pl_module), penalty=self.penalty, min_gain=self.min_gain,
                          split=self.split, merge=self.merge, split_iters=self.split_iters,
                          covariance=self.covariance, distributed=is_distributed())
        pl_module.set_mixture_stats(res.n, res.s1, diag_of(res.s2))
        self.calls += 1
        self.births += res.births
        self.merges += res.merges
        self.deaths += res.deaths
        self.history.append([trainer.current_epoch, trainer.global_step, pl_module.n_clusters])
        return res

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if pl_module.clustering_active and self.calls == 0:
            self.start_epoch, self.start_step = trainer.current_epoch, trainer.global_step
            self._step_and_log(trainer, pl_module, max(self.first_rounds, 1))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if self.every_n_steps is None or not pl_module.clustering_active or self.calls == 0:
            return
        # once per optimizer step: under accumulate_grad_batches several batches end at one global_step
        step = trainer.global_step
        if (step - self.start_step) % self.every_n_steps == 0 and step != self.history[-1][1]:
            self._step_and_log(trainer, pl_module, self.rounds)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.every_n_epochs is None or not pl_module.clustering_active or self.calls == 0:
            return
        if (trainer.current_epoch - self.start_epoch + 1) % self.every_n_epochs == 0:
            self._step_and_log(trainer, pl_module, self.rounds)

    def _step_and_log(self, trainer, pl_module, rounds: int) -> None:
        res = self.step(trainer, pl_module, rounds)
        # at once, once (self.log in on_train_batch_end reached the loggers only at log_every_n_steps steps)
        log_metrics_now(trainer, {"train/births": res.births, "train/merges": res.merges, "train/deaths": res.deaths})

    def k_figure(self):
        """A matplotlib figure of K over training steps (one point per birth/merge step)."""
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.step([h[1] for h in self.history], [h[2] for h in self.history], where="post", marker="o", ms=3)
        ax.set_xlabel("training step")
        ax.set_ylabel("K")
        ax.set_title("number of clusters")
        fig.tight_layout()
        return fig

    def on_fit_end(self, trainer, pl_module) -> None:
        """Saves the K-over-training plot as ``k_over_training.png`` beside ClusteringPlots' files (``<run>/plots``
        for every logger's users) and logs it to the loggers that take images (W&B), at the step of the run's rows.
        A run with neither a logger nor ClusteringPlots (the estimator's) writes no file."""
        if not self.history or not trainer.is_global_zero or trainer.fast_dev_run:  # a trial run writes nothing
            return
        import matplotlib.pyplot as plt

        folder = plots_folder(trainer)
        if folder is None:
            return
        path = folder / "k_over_training.png"
        fig = self.k_figure()
        try:
            atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
        finally:
            plt.close(fig)
        log_images_now(trainer, {"train/k_over_training": path})

    def state_dict(self) -> dict:
        return {"calls": self.calls, "start_epoch": self.start_epoch, "start_step": self.start_step,
                "births": self.births, "merges": self.merges, "deaths": self.deaths,
                "history": [list(h) for h in self.history]}

    def load_state_dict(self, state_dict: dict) -> None:
        self.calls = state_dict["calls"]
        self.start_epoch = state_dict["start_epoch"]
        self.start_step = state_dict.get("start_step", -1)  # absent in checkpoints of epoch schedules before it
        self.births, self.merges, self.deaths = state_dict["births"], state_dict["merges"], state_dict["deaths"]
        self.history = [list(h) for h in state_dict["history"]]
