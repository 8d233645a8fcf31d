"""Optimizers that reproduce how the official code of a method updated its weights."""

from __future__ import annotations

import math

import torch

__all__ = ["KerasAdam"]


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
