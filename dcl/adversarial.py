"""Adversarial (generator / discriminator) alternating optimization, shared by every method that needs it.

Lightning 2 has no ``optimizer_idx``: several optimizers mean manual optimization. This module wraps that once,
so that any method can add an adversarial term:

    class MyMethod(ClusteringMethod):
        def __init__(self, ..., generator_optimizer=None, discriminator_optimizer=None, ...):
            super().__init__(...)
            self.automatic_optimization = False
            self.adversarial = AdversarialOptimization(generator_optimizer, discriminator_optimizer, ...)

        def configure_optimizers(self):
            return self.adversarial.configure(self.generator_parameters(), self.discriminator.parameters())

        def training_step(self, batch, batch_idx):
            g_opt, d_opt = self.optimizers()
            logs = self.adversarial.step(self, lambda: self.g_loss(batch), lambda: self.d_loss(batch), g_opt, d_opt)
            self.log_train_loss(logs.pop("g_loss"))  # train/loss: the generator's, the model being clustered
            self.log_dict(logs)  # d_loss under its own name, and the logs the loss functions returned

        def on_train_epoch_end(self):
            step_schedulers(self)

What it guarantees:

- **Each side updates only its own parameters.** A side's step runs between ``toggle_optimizer`` and
  ``untoggle_optimizer``: every parameter that is not in that side's optimizer has ``requires_grad`` off, so the
  discriminator step leaves no gradient in the encoder/decoder and the generator step (which back-propagates
  *through* the discriminator) leaves none in the discriminator. Gradients are zeroed before each backward.
- **Mixed precision and DDP.** Backward is ``module.manual_backward`` and the step is the ``LightningOptimizer``'s,
  so the precision plugin scales the loss and unscales / skips / updates per optimizer step (16-mixed), bf16
  needs no scaler, and DDP reduces the gradients in backward. Under DDP, a side's backward reaches only that
  side's parameters, so DDP must detect unused parameters: call :meth:`AdversarialOptimization.prepare_strategy`
  from the module's ``setup`` (it switches ``find_unused_parameters`` on before the model is wrapped). BatchNorm's
  running statistics follow each rank's samples; on a ``ClusteringMethod`` the base class broadcasts rank 0's at
  every optimizer step (``on_before_optimizer_step``), a plain LightningModule calls
  ``dcl.distributed.broadcast_norm_statistics_(self)`` there itself.
- **Gradient clipping** per side through ``module.clip_gradients``, applied inside the optimizer's step, after
  16-mixed's GradScaler has unscaled the gradients. The Trainer's own ``gradient_clip_val`` is not allowed with
  manual optimization; set it here instead.
- **Checkpointed.** Optimizers and schedulers are the Trainer's, so their states are saved and restored.
- Steps per side: ``discriminator_steps`` updates of the discriminator, then ``generator_steps`` of the
  generator (or the other order), on the same batch, each recomputing its loss (fresh noise, current weights).
  Note that ``trainer.global_step`` counts optimizer steps, i.e. ``discriminator_steps + generator_steps`` per
  batch.

Schedulers are stepped once per epoch by :func:`step_schedulers` (schedulers that need a monitored metric,
such as ``ReduceLROnPlateau``, are not supported).
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Union

import torch
from torch import Tensor

from dcl.optim import OptimizerFactory, check_optimizer, make_optimizer

SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]
#: a side's loss: a scalar tensor, or (scalar, {name: value to log})
LossFn = Callable[[], Union[Tensor, tuple[Tensor, dict[str, Any]]]]

CLIP_ALGORITHMS = ("norm", "value")


def _config_error(message: str) -> Exception:
    from dcl.method import ConfigError  # late import: dcl.method does not depend on this module
    return ConfigError(message)


def default_gan_optimizer(params: Iterable) -> torch.optim.Optimizer:
    """DCGAN's Adam (lr 2e-4, betas (0.5, 0.999)), the usual default of both GAN sides."""
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


def build_optimizer(factory: OptimizerFactory | None, params: Iterable, default: OptimizerFactory,
                    scheduler: SchedulerFactory | None = None, name: str | None = None) -> dict[str, Any]:
    """One entry of ``configure_optimizers``' list: ``{"optimizer": ..., "lr_scheduler": ...}``. ``name`` names the
    scheduler's series in ``LearningRateMonitor`` (e.g. ``lr-generator``): its default, ``lr-<optimizer class>``,
    is one name for every side's Adam."""
    optimizer = make_optimizer(factory, params, default)
    entry: dict[str, Any] = {"optimizer": optimizer}
    if scheduler is not None:
        entry["lr_scheduler"] = {"scheduler": scheduler(optimizer), "interval": "epoch", "name": name}
    return entry


def optimizer_step(module, optimizer, loss_fn: LossFn, gradient_clip_val: float | None = None,
                   gradient_clip_algorithm: str = "norm") -> tuple[Tensor, dict[str, Any]]:
    """One manual optimization step of ``optimizer`` only: toggle, zero grad, backward, clip, step, untoggle.

    ``loss_fn`` is evaluated inside the toggle, so the graph it builds reaches no parameter of other optimizers.
    Returns the (detached) loss and the logs ``loss_fn`` returned.
    """
    module.toggle_optimizer(optimizer)
    try:
        out = loss_fn()
        loss, logs = out if isinstance(out, tuple) else (out, {})
        optimizer.zero_grad(set_to_none=True)
        module.manual_backward(loss)
        with _clipping_in_step(module, optimizer, gradient_clip_val, gradient_clip_algorithm):
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    finally:
        module.untoggle_optimizer(optimizer)
    return loss.detach(), logs


@contextlib.contextmanager
def _clipping_in_step(module, optimizer, gradient_clip_val: float | None, gradient_clip_algorithm: str):
    """Clip the gradients at the start of the torch optimizer's own step, where they are final.

    Under 16-mixed the GradScaler unscales them inside ``LightningOptimizer.step``, just before that step;
    clipped before ``step()`` (the manual-optimization recipe), the still-scaled gradients would be clipped and
    the step would move the weights a loss scale (2^16 at first) less than asked.
    """
    if not gradient_clip_val:
        yield
        return
    raw = getattr(optimizer, "optimizer", optimizer)  # the torch optimizer inside a LightningOptimizer
    handle = raw.register_step_pre_hook(lambda *_: module.clip_gradients(
        optimizer, gradient_clip_val=gradient_clip_val, gradient_clip_algorithm=gradient_clip_algorithm))
    try:
        yield
    finally:
        handle.remove()


def step_schedulers(module) -> None:
    """Step every scheduler of ``module`` once (call from ``on_train_epoch_end`` under manual optimization)."""
    schedulers = module.lr_schedulers()
    if schedulers is None:
        return
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        scheduler.step()


class AdversarialOptimization:
    """Alternating generator / discriminator updates under Lightning manual optimization.

    Args:
        generator_optimizer: factory ``params -> Optimizer`` of the generator side (None: Adam 2e-4, (0.5, 0.999)).
        discriminator_optimizer: same for the discriminator side.
        generator_scheduler: optional factory ``Optimizer -> LRScheduler`` (stepped once per epoch; its learning
            rate is ``lr-generator`` in ``LearningRateMonitor``'s series).
        discriminator_scheduler: same for the discriminator side (``lr-discriminator``).
        generator_steps: generator updates per batch (>= 1).
        discriminator_steps: discriminator updates per batch (>= 1).
        gradient_clip_val: clip each side's gradients to this norm (or value); None or 0: no clipping.
        gradient_clip_algorithm: ``norm`` or ``value``.
        discriminator_first: update the discriminator before the generator in each batch (the usual order).
    """

    def __init__(self, generator_optimizer: OptimizerFactory | None = None,
                 discriminator_optimizer: OptimizerFactory | None = None,
                 generator_scheduler: SchedulerFactory | None = None,
                 discriminator_scheduler: SchedulerFactory | None = None,
                 generator_steps: int = 1, discriminator_steps: int = 1, gradient_clip_val: float | None = None,
                 gradient_clip_algorithm: str = "norm", discriminator_first: bool = True) -> None:
        if not isinstance(generator_steps, int) or not isinstance(discriminator_steps, int) \
                or generator_steps < 1 or discriminator_steps < 1:
            raise _config_error(f"generator_steps and discriminator_steps must be integers >= 1, got "
                                f"{generator_steps} and {discriminator_steps}")
        if gradient_clip_val is not None and gradient_clip_val < 0:
            raise _config_error(f"gradient_clip_val must be >= 0 (or null for no clipping), got {gradient_clip_val}")
        if gradient_clip_algorithm not in CLIP_ALGORITHMS:
            raise _config_error(f"gradient_clip_algorithm must be one of {CLIP_ALGORITHMS}, got "
                                f"{gradient_clip_algorithm!r}")
        for factory, name in ((generator_optimizer, "generator_optimizer"),
                              (discriminator_optimizer, "discriminator_optimizer")):
            check_optimizer(factory, name)
        self.generator_optimizer = generator_optimizer
        self.discriminator_optimizer = discriminator_optimizer
        self.generator_scheduler = generator_scheduler
        self.discriminator_scheduler = discriminator_scheduler
        self.generator_steps = generator_steps
        self.discriminator_steps = discriminator_steps
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = gradient_clip_algorithm
        self.discriminator_first = discriminator_first

    def configure(self, generator_params: Iterable, discriminator_params: Iterable,
                  default_generator: OptimizerFactory = default_gan_optimizer,
                  default_discriminator: OptimizerFactory = default_gan_optimizer) -> list[dict[str, Any]]:
        """``configure_optimizers``' return value: the generator's optimizer first, then the discriminator's.
        The ``default_*`` factories are used for a side whose optimizer was not configured."""
        g = [p for p in generator_params]
        d = [p for p in discriminator_params]
        if not g or not d:
            raise _config_error("adversarial training needs parameters on both the generator and the "
                                "discriminator side")
        if {id(p) for p in g} & {id(p) for p in d}:
            raise _config_error("a parameter is on both the generator and the discriminator side; each side "
                                "must own its parameters")
        return [build_optimizer(self.generator_optimizer, g, default_generator, self.generator_scheduler,
                                "lr-generator"),
                build_optimizer(self.discriminator_optimizer, d, default_discriminator, self.discriminator_scheduler,
                                "lr-discriminator")]

    @staticmethod
    def prepare_strategy(module) -> None:
        """Call from the module's ``setup("fit")`` (before the model is wrapped): under DDP, switch on
        ``find_unused_parameters``, since a side's backward reaches only that side's parameters (the others are
        toggled off), which plain DDP would wait for forever. No effect without DDP."""
        from lightning.pytorch.strategies import DDPStrategy
        strategy = module.trainer.strategy
        kwargs = getattr(strategy, "_ddp_kwargs", None)
        if isinstance(strategy, DDPStrategy) and isinstance(kwargs, dict) and not kwargs.get("find_unused_parameters"):
            kwargs["find_unused_parameters"] = True

    def step(self, module, generator_loss: LossFn, discriminator_loss: LossFn,
             generator_optimizer, discriminator_optimizer) -> dict[str, Any]:
        """One batch of the game: ``discriminator_steps`` then ``generator_steps`` updates (or the reverse).

        Returns ``{"d_loss", "g_loss"}`` of each side's last step plus whatever the loss functions returned
        as logs (from their last call).
        """
        sides = [("d", discriminator_loss, discriminator_optimizer, self.discriminator_steps),
                 ("g", generator_loss, generator_optimizer, self.generator_steps)]
        if not self.discriminator_first:
            sides.reverse()
        logs: dict[str, Any] = {}
        for name, loss_fn, optimizer, n in sides:
            for _ in range(n):
                loss, side_logs = optimizer_step(module, optimizer, loss_fn, self.gradient_clip_val,
                                                 self.gradient_clip_algorithm)
            logs[f"{name}_loss"] = loss
            logs.update(side_logs)
        return logs
