"""How dcl builds optimizers (``make_optimizer``: PyTorch's fused kernels where they exist), and optimizers and
schedules that reproduce how the official code of a method updated its weights (``KerasAdam``, ``CaffeStepLR``)."""

from __future__ import annotations

import inspect
import math
from typing import Callable, Iterable

import torch

__all__ = ["CaffeStepLR", "KerasAdam", "check_optimizer", "make_optimizer", "with_fused_kernel"]

OptimizerFactory = Callable[[Iterable], torch.optim.Optimizer]

#: the optimizers given PyTorch's fused kernel when a config leaves the implementation unset (exact classes:
#: a subclass's step may depend on the per-parameter loop)
FUSED_KERNEL_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)
FUSED_KERNEL_DEVICES = ("cpu", "cuda")


def make_optimizer(factory: OptimizerFactory | None, params: Iterable, default: OptimizerFactory
                   ) -> torch.optim.Optimizer:
    """The configured optimizer (``factory``, else ``default``) on ``params``, with PyTorch's fused kernel where it
    has one (``with_fused_kernel``). Every dcl method builds its optimizers through here."""
    return with_fused_kernel((factory or default)(list(params)))


def check_optimizer(factory: OptimizerFactory | None, name: str) -> None:
    """Build ``factory``'s optimizer on a stand-in parameter, so that a setting it refuses (a negative lr, betas
    outside [0, 1)) is one error when the method is built: a later phase's optimizer is built only when that phase
    starts, perhaps after hours of pretraining. Raises ValueError (the CLI's one-line error for a bad setting)."""
    if factory is None:
        return
    try:
        factory([torch.nn.Parameter(torch.zeros(1))])
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name} refuses its settings: {err}") from None


def with_fused_kernel(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """``optimizer`` rebuilt with ``fused=True`` when it is a fresh Adam, AdamW or SGD whose config left the
    implementation (``foreach``, ``fused``) unset; otherwise ``optimizer`` itself.

    Why: left unset, PyTorch (2.14) updates CPU parameters with a Python loop of several elementwise kernels per
    parameter, and the square root in Adam's denominator runs several times slower on exact zeros (6.5x on 10^6
    zeros against random values, an ad hoc timing on an AVX2 CPU), which are common: the weights of dead ReLU units
    get zero gradients. The fused kernel does the whole update in one pass: Adam's update of DEC/IDEC's
    d-500-500-2000-10 autoencoder training on USPS took 3.6 instead of 10.6 ms on one CPU thread (the whole step
    1.07x faster), SGD with momentum 2.3 instead of 3.2 ms (``benchmarks/results/fused_optimizers.md``). Same
    update up to float rounding. On GPUs PyTorch's documentation calls fused the fastest implementation too (not
    measured here). Left as built: other classes and subclasses (``KerasAdam``), an explicit ``foreach`` or
    ``fused`` (``fused: false`` in a config restores PyTorch's default), ``differentiable``, parameters that are
    not floating point or not on a CPU or CUDA device, and an optimizer that has already stepped.
    """
    if type(optimizer) not in FUSED_KERNEL_OPTIMIZERS or optimizer.state:
        return optimizer
    groups = optimizer.param_groups
    chosen = any(g.get("fused") is not None or g.get("foreach") is not None or g.get("differentiable")
                 for g in groups)
    params = [p for g in groups for p in g["params"]]
    if chosen or not all(p.is_floating_point() and p.device.type in FUSED_KERNEL_DEVICES for p in params):
        return optimizer
    accepted = inspect.signature(type(optimizer).__init__).parameters
    defaults = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    fused = type(optimizer)([{**g, "fused": True} for g in groups], **{**defaults, "fused": True})
    # Under 16-mixed, let the GradScaler unscale the gradients before the step, as for any optimizer, instead of
    # the fused step doing it: Lightning clips gradients after that unscaling, and refuses to clip (RuntimeError)
    # for an optimizer that unscales inside its step.
    fused._step_supports_amp_scaling = False
    return fused


class KerasAdam(torch.optim.Adam):
    """Adam as TensorFlow / Keras computes it, for methods whose official code is Keras.

    Keras adds ``eps`` to the uncorrected sqrt(v_t) ("epsilon hat" of Kingma and Ba, the formula just before their
    section 2.1; the Keras documentation says so), PyTorch to the bias-corrected sqrt(v_t / (1 - beta2^t)). Same
    arguments, same update once beta2^t is small; in the first few thousand steps (beta2 = 0.999) Keras' eps is
    worth eps / sqrt(1 - beta2^t) in PyTorch's update: 31.6 eps at the first step, 2.3 eps after 200. With a tiny
    eps that does not matter; with a large one (AE-CM's authors use 1e-3) it damps the first epochs, when the
    clusters form. This class sets PyTorch's eps to that value before each step, so the update is Keras'.
    The step count t is the parameters' own (all parameters of a group step together in Keras; here, a
    parameter without a gradient at some step would lag, as in PyTorch's Adam).
    """

    # Only the arguments Keras' Adam of the papers' code had (Keras' defaults): PyTorch's weight_decay and amsgrad
    # would not follow Keras' update.
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-7) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        group.setdefault("keras_eps", group["eps"])  # the eps asked for; "eps" becomes its per-step equivalent

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:  # first, so that the gradients (and which parameters have one) are this step's
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            steps = next((float(self.state[p]["step"]) for p in group["params"]
                          if p.grad is not None and "step" in self.state[p]), 0.0)
            group["eps"] = group["keras_eps"] / math.sqrt(1.0 - group["betas"][1] ** (steps + 1))
        super().step()
        return loss


class CaffeStepLR(torch.optim.lr_scheduler.LambdaLR):
    """Caffe's ``lr_policy: "step"`` (the lr times ``gamma`` every ``step_size`` steps; 0: constant) with the
    ``momentum_burnin`` of the DEC authors' Caffe fork (piiswrong/dec ``solver.cpp``): over a solver's first
    ``momentum_burnin`` steps the momentum rises linearly from 0 to its set value (``momentum x step /
    momentum_burnin``), so that the first steps, whose gradients are the largest, are not amplified up to 10x by a
    momentum of 0.9. Stepped once per optimizer step; its state (the step count) is checkpointed with the
    scheduler, the momentum in force with the optimizer's param groups. Caffe's history holds lr x gradient,
    PyTorch's SGD buffer the gradient: at a step of the lr the buffer is scaled by old lr / new lr, so that it goes
    on as Caffe's history does (the past gradients at the lr they were taken with; found by an audit: unscaled,
    PyTorch cut them to the new lr at once)."""

    def __init__(self, optimizer: torch.optim.Optimizer, step_size: int = 0, gamma: float = 0.1,
                 momentum_burnin: int = 0) -> None:
        if momentum_burnin and any("momentum" not in g for g in optimizer.param_groups):
            raise ValueError(f"a momentum burn-in needs an optimizer with momentum (SGD, RMSprop), got "
                             f"{type(optimizer).__name__}")
        self.momentum_burnin = momentum_burnin
        self.base_momentums = [g.get("momentum", 0.0) for g in optimizer.param_groups]
        super().__init__(optimizer, lambda i: gamma ** (i // step_size) if step_size else 1.0)

    def step(self, epoch=None) -> None:
        before = [group["lr"] for group in self.optimizer.param_groups]
        super().step(epoch)
        for group, lr in zip(self.optimizer.param_groups, before):
            if group["lr"] != lr and group["lr"] > 0:
                for param in group["params"]:
                    buffer = self.optimizer.state.get(param, {}).get("momentum_buffer")
                    if buffer is not None:
                        buffer.mul_(lr / group["lr"])
        if self.momentum_burnin:
            # not 0 at the first step: with a momentum of 0 PyTorch's SGD keeps no buffer, and the next step's would
            # lack the first gradient, which Caffe's history holds; any momentum leaves the first step as Caffe's
            # (the buffer starts as the gradient)
            rise = min(1.0, max(self.last_epoch, 1e-12) / self.momentum_burnin)
            for group, momentum in zip(self.optimizer.param_groups, self.base_momentums):
                group["momentum"] = momentum * rise
