"""KerasAdam follows TensorFlow's Adam update (eps added to the uncorrected sqrt(v)), written out here from the
formula in TensorFlow's documentation, step by step; PyTorch's Adam with the same eps does not. dcl builds
PyTorch's optimizers with their fused kernel unless a config chose the implementation: same update, same settings."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from conftest import REPO
from ddp_helpers import (AutocastDtypes, GradientNorms, assert_clipped_after_unscaling,
                         fp16_with_grad_scaler)
from dcl.datamodules.digits import Digits
from dcl.methods.idec import IDEC
from dcl.optim import CaffeStepLR, KerasAdam, make_optimizer, with_fused_kernel

LR, BETAS, EPS = 1e-2, (0.9, 0.999), 1e-3
TARGET = np.array([0.5, -1.0, 2.0, 0.01])


def grad(w: np.ndarray) -> np.ndarray:
    return 1e-3 * (w - TARGET) ** 3  # small gradients: the regime where eps matters


def tensorflow_adam(steps: int) -> np.ndarray:
    """tf.train.AdamOptimizer's documented update:
    lr_t = lr sqrt(1 - b2^t) / (1 - b1^t); w -= lr_t m / (sqrt(v) + eps)."""
    w, m, v = np.zeros(4), np.zeros(4), np.zeros(4)
    for t in range(1, steps + 1):
        g = grad(w)
        m = BETAS[0] * m + (1 - BETAS[0]) * g
        v = BETAS[1] * v + (1 - BETAS[1]) * g * g
        w = w - LR * np.sqrt(1 - BETAS[1] ** t) / (1 - BETAS[0] ** t) * m / (np.sqrt(v) + EPS)
    return w


def run(optimizer_cls, steps: int, closure: bool = False, w: torch.Tensor | None = None,
        state: dict | None = None) -> tuple[torch.Tensor, dict]:
    w = torch.zeros(4, dtype=torch.float64, requires_grad=True) if w is None else w
    opt = optimizer_cls([w], lr=LR, betas=BETAS, eps=EPS)
    if state is not None:
        opt.load_state_dict(state)
    target = torch.from_numpy(TARGET)

    def compute_grad():
        opt.zero_grad()
        loss = (1e-3 * (w - target) ** 4 / 4).sum()
        loss.backward()
        return loss

    for _ in range(steps):
        if closure:  # how Lightning's automatic optimization calls step
            opt.step(compute_grad)
        else:
            compute_grad()
            opt.step()
    return w, opt.state_dict()


@pytest.mark.parametrize("closure", [False, True], ids=["step()", "step(closure)"])
def test_keras_adam_is_tensorflows_update(closure):
    w, _ = run(KerasAdam, 300, closure)
    np.testing.assert_allclose(w.detach().numpy(), tensorflow_adam(300), rtol=1e-10, atol=1e-12)
    torch_w, _ = run(torch.optim.Adam, 300, closure)  # the difference the class exists for
    assert np.abs(torch_w.detach().numpy() - tensorflow_adam(300)).max() > 1e-3


def test_keras_adam_defaults_are_keras():
    group = KerasAdam([torch.nn.Parameter(torch.zeros(1))]).param_groups[0]
    assert (group["lr"], group["betas"], group["keras_eps"]) == (1e-3, (0.9, 0.999), 1e-7)


def test_keras_adam_resumes_from_its_state_dict():
    w, state = run(KerasAdam, 120)
    resumed, _ = run(KerasAdam, 180, w=w.detach().clone().requires_grad_(True), state=state)
    np.testing.assert_allclose(resumed.detach().numpy(), tensorflow_adam(300), rtol=1e-10, atol=1e-12)
    assert state["param_groups"][0]["keras_eps"] == EPS


def test_keras_adam_is_one_config_line(capsys):
    """The AE-CM authors' update from the CLI: the optimizer's class path, its arguments as given."""
    import yaml

    from dcl.cli import main

    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(REPO / "configs" / "aecm" / "digits.yaml"), "--model.init_args.optimizer",
              "dcl.optim.KerasAdam", "--model.init_args.optimizer.init_args.eps", "0.001", "--print_config"])
    assert done.value.code in (0, None), capsys.readouterr().err
    optimizer = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["optimizer"]
    assert optimizer["class_path"] == "dcl.optim.KerasAdam" and optimizer["init_args"]["eps"] == 0.001


def two_groups() -> list[dict]:
    torch.manual_seed(0)
    return [{"params": [torch.randn(5, 3, dtype=torch.float64, requires_grad=True)]},
            {"params": [torch.randn(7, dtype=torch.float64, requires_grad=True)], "lr": 0.05}]


def train(optimizer: torch.optim.Optimizer, steps: int = 25) -> list[torch.Tensor]:
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for step in range(steps):
        optimizer.zero_grad()
        # zero gradients for some entries, as dead ReLU units give (the loop's slow case)
        sum(((p - 0.1 * step).relu() ** 2).sum() for p in params).backward()
        optimizer.step()
    return [p.detach().clone() for p in params]


OPTIMIZERS = {"Adam": (torch.optim.Adam, {"lr": 0.01, "betas": (0.8, 0.99), "eps": 1e-6, "amsgrad": True}),
              "AdamW": (torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.1}),
              "SGD": (torch.optim.SGD, {"lr": 0.01, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3})}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_the_fused_kernel_keeps_every_setting_and_the_update(name):
    cls, kwargs = OPTIMIZERS[name]
    loop = cls(two_groups(), **kwargs)
    fused = make_optimizer(None, two_groups(), lambda params: cls(params, **kwargs))
    assert type(fused) is cls and all(g["fused"] for g in fused.param_groups)
    assert not fused._step_supports_amp_scaling  # under 16-mixed the GradScaler unscales first (clipping works)
    settings = [{k: v for k, v in g.items() if k not in ("params", "fused")} for g in loop.param_groups]
    assert [{k: v for k, v in g.items() if k not in ("params", "fused")} for g in fused.param_groups] == settings
    assert fused.param_groups[1]["lr"] == 0.05
    for a, b in zip(train(loop), train(fused)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("optimizer", [
    lambda p: torch.optim.Adam(p, fused=False),  # a config's explicit choice, e.g. `fused: false`
    lambda p: torch.optim.Adam(p, foreach=True),
    lambda p: torch.optim.SGD(p, lr=0.1, differentiable=True),
    lambda p: KerasAdam(p),  # a subclass: its step may depend on the per-parameter loop
    lambda p: torch.optim.RMSprop(p),  # no fused kernel in PyTorch
], ids=["fused false", "foreach", "differentiable", "subclass", "no fused kernel"])
def test_a_chosen_implementation_or_another_optimizer_is_kept(optimizer):
    built = optimizer(two_groups())
    assert with_fused_kernel(built) is built


def test_parameters_on_a_device_without_the_fused_kernel_keep_the_optimizer():
    built = torch.optim.Adam([torch.nn.Parameter(torch.zeros(3, device="meta"))])  # fused=True would refuse them
    assert with_fused_kernel(built) is built


def test_an_optimizer_that_has_stepped_is_kept():
    used = torch.optim.Adam(two_groups())
    train(used, steps=1)
    assert with_fused_kernel(used) is used


def test_mixed_precision_with_a_grad_scaler_clips_and_trains(tmp_path):
    # 16-mixed: a GradScaler; Lightning unscales before clipping, which it refuses for an optimizer that unscales
    # inside its own step (the fused kernel's default): each phase's fused Adam must leave that to the scaler.
    dm = Digits(batch_size=64)
    model = IDEC(dm.n_clusters, dm.input_shape, hidden_dims=[64, 64], pretrain_epochs=1, kmeans_n_init=3)
    trainer = pl.Trainer(max_epochs=3, plugins=[fp16_with_grad_scaler()],
                         gradient_clip_val=0.05, callbacks=[GradientNorms(), AutocastDtypes()], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path)
    trainer.fit(model, dm)
    assert GradientNorms.scaler and torch.float16 in AutocastDtypes.seen, "16-mixed ran without a GradScaler"
    assert_clipped_after_unscaling(GradientNorms.steps, 0.05, min_steps=60)  # both phases' optimizers
    assert model.clustering_active and model.cluster_steps > 0



@pytest.mark.parametrize("fused", [False, True])
def test_caffe_step_lr_is_the_authors_caffe_solver_over_the_burn_in_and_the_lr_steps(fused):
    """piiswrong/dec's solver.cpp, written out: momentum_k = 0.9 k / burnin, lr_k = 0.1 x 0.1^(k // 6), history =
    momentum_k history + lr_k grad, w -= history; the fused kernel follows the momentum as it changes (from 0 at the
    first step, when PyTorch's SGD keeps no momentum buffer). After an lr step Caffe's history still holds the past
    gradients at their lr (found by an audit: PyTorch's buffer went to the new lr at once, and the updates after an lr
    step were 89% to 101% off Caffe's, measured on these gradients)."""
    grads = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
    w = torch.nn.Parameter(torch.zeros(4))
    optimizer = make_optimizer(None if fused else lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, foreach=False),
                               [w], lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9))
    assert bool(optimizer.param_groups[0].get("fused")) == fused
    scheduler = CaffeStepLR(optimizer, step_size=6, momentum_burnin=5)
    expected, history = torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    for k, g in enumerate(grads):
        assert optimizer.param_groups[0]["momentum"] == pytest.approx(0.9 * min(k, 5) / 5)
        history = 0.9 * min(k, 5) / 5 * history + 0.1 * 0.1 ** (k // 6) * g.double()
        expected -= history
        w.grad = g.clone()
        optimizer.step()
        scheduler.step()
        assert torch.allclose(w.detach().double(), expected, atol=1e-6), k


def test_caffe_step_lr_steps_the_lr_and_resumes_its_burn_in_from_its_state():
    def build():
        w = torch.nn.Parameter(torch.zeros(2))
        optimizer = torch.optim.SGD([{"params": [w]}, {"params": [], "lr": 0.2}], lr=0.1, momentum=0.9)
        return optimizer, CaffeStepLR(optimizer, step_size=3, gamma=0.5, momentum_burnin=4)
    optimizer, scheduler = build()
    seen = []
    for _ in range(6):
        seen.append([(g["lr"], g["momentum"]) for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert seen == [[(pytest.approx(0.1 * 0.5 ** (k // 3)), pytest.approx(0.9 * min(k, 4) / 4)),
                     (pytest.approx(0.2 * 0.5 ** (k // 3)), pytest.approx(0.9 * min(k, 4) / 4))] for k in range(6)]
    state = scheduler.state_dict()
    optimizer2, scheduler2 = build()
    optimizer2.load_state_dict(optimizer.state_dict())
    scheduler2.load_state_dict(state)
    optimizer2.step()
    scheduler2.step()
    optimizer.step()
    scheduler.step()
    assert [g["momentum"] for g in optimizer2.param_groups] == [g["momentum"] for g in optimizer.param_groups]
    assert scheduler2.last_epoch == scheduler.last_epoch == 7


def test_caffe_step_lr_refuses_a_burn_in_without_momentum():
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="needs an optimizer with momentum"):
        CaffeStepLR(optimizer, momentum_burnin=10)
    CaffeStepLR(optimizer, step_size=5)  # the lr schedule alone takes any optimizer
