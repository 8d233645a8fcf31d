"""KerasAdam follows TensorFlow's Adam update (eps added to the uncorrected sqrt(v)), written out here from the
formula in TensorFlow's documentation, step by step; PyTorch's Adam with the same eps does not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dcl.optim import KerasAdam

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


def test_keras_adam_resumes_from_its_state_dict():
    w, state = run(KerasAdam, 120)
    resumed, _ = run(KerasAdam, 180, w=w.detach().clone().requires_grad_(True), state=state)
    np.testing.assert_allclose(resumed.detach().numpy(), tensorflow_adam(300), rtol=1e-10, atol=1e-12)
    assert state["param_groups"][0]["keras_eps"] == EPS


def test_keras_adam_is_one_config_line(capsys):
    """The AE-CM authors' update from the CLI: the optimizer's class path, its arguments as given."""
    import yaml

    from conftest import REPO
    from dcl.cli import main

    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(REPO / "configs" / "aecm" / "digits.yaml"), "--model.init_args.optimizer",
              "dcl.optim.KerasAdam", "--model.init_args.optimizer.init_args.eps", "0.001", "--print_config"])
    assert done.value.code in (0, None), capsys.readouterr().err
    optimizer = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["optimizer"]
    assert optimizer["class_path"] == "dcl.optim.KerasAdam" and optimizer["init_args"]["eps"] == 0.001
