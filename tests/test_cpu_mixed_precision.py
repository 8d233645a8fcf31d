"""benchmarks/cpu_mixed_precision.py: a measurement's time budget and one record per kind of CPU (tiny steps)."""

from __future__ import annotations

import importlib.util
import json

import torch
from conftest import REPO

spec = importlib.util.spec_from_file_location("cpu_mixed_precision", REPO / "benchmarks" / "cpu_mixed_precision.py")
cmp = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cmp)


def test_a_spent_budget_ends_the_measurement_after_one_timed_step(monkeypatch):
    """float16 autocast took over a minute a step of DCFAE's MNIST networks on an AVX512 CPU: 3 warm-up and 5 timed
    steps, twice, would have taken over 16 minutes. Past the budget it stops after one warm-up and one timed step."""
    calls = []
    model = torch.nn.Linear(4, 4)
    monkeypatch.setattr(cmp, "make", lambda name: (model, list(model.parameters()),
                                                   lambda x: calls.append(1) or model(x).square().mean(),
                                                   [torch.randn(8, 4)]))
    ms, timed = cmp.step_ms("any", None, steps=5, budget_s=0.0)
    assert (len(calls), timed) == (2, 1) and ms > 0
    calls.clear()
    assert cmp.step_ms("any", torch.bfloat16, steps=5, budget_s=60.0)[1] == 5 and len(calls) == 8


def test_each_kind_of_cpu_keeps_its_own_record(tmp_path, monkeypatch):
    """The AVX2 record (bfloat16 6x slower) was overwritten by a run on another CPU before; now each capability has
    its file, and a cell cut short by the budget says how many steps it timed."""
    monkeypatch.setattr(cmp, "RESULTS", tmp_path)
    case = {"32-true": 10.0, "bf16-mixed": 5.0, "16-mixed": 1000.0}
    for capability in ("AVX2", "AVX512"):
        cmp.write({"torch": "x", "threads": 2, "cpu_capability": capability, "native_bf16": capability != "AVX2",
                   "native_fp16": False, "cpu_features": [], "rounds": 2, "steps": 5, "cases": {"dcfae": case},
                   "timed_steps": {"dcfae": {"32-true": 10, "bf16-mixed": 10, "16-mixed": 2}}})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cpu_mixed_precision_avx2.json", "cpu_mixed_precision_avx2.md",
        "cpu_mixed_precision_avx512.json", "cpu_mixed_precision_avx512.md"]
    assert json.loads((tmp_path / "cpu_mixed_precision_avx2.json").read_text())["native_bf16"] is False
    assert "| dcfae | 10.0 | 5.0 (0.5x) | 1000.0 (100.0x, 2 steps) |" in (tmp_path / "cpu_mixed_precision_avx512.md"
                                                                          ).read_text()
