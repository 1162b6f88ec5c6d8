"""Precision: one rule (ccc_nodes.core.prediction.resolve_precision) for the Colorizer, training
evaluation and the trainer; the trainer records the precision it ran in."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import TINY, image_tree

from ccc_nodes.core.prediction import resolve_precision
from ccc_nodes.core.settings import PRECISIONS

CPU, MPS, CUDA = torch.device("cpu"), torch.device("mps"), torch.device("cuda")


def test_one_rule_for_each_precision_on_each_device():
    cuda_auto = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp16"
    table = {  # (device, training): what auto, fp32, bf16, fp16 run as
        (CPU, False): ("fp32", "fp32", "bf16", "fp32"),
        (CPU, True): ("fp32", "fp32", "bf16", "fp32"),
        (MPS, False): ("fp16", "fp32", "bf16", "fp16"),
        (MPS, True): ("fp32", "fp32", "bf16", "fp32"),  # fp16 training needs the CUDA gradient scaler
        (CUDA, False): (cuda_auto, "fp32", "bf16", "fp16"),
        (CUDA, True): (cuda_auto, "fp32", "bf16", "fp16"),
    }
    for (device, training), expected in table.items():
        got = tuple(resolve_precision(device, p, training=training) for p in PRECISIONS)
        assert got == expected, (device, training)
        # a resolved precision resolves to itself: callers may resolve once and pass it on
        assert all(resolve_precision(device, p, training=training) == p for p in got)
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision(CPU, "half")


def test_training_evaluation_autocasts_as_the_rule_says():
    # It used to run full precision on every device but CUDA, whatever was asked.
    from training.evaluate import autocast

    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast(CPU, "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    for precision in ("auto", "fp32", "fp16"):
        with autocast(CPU, precision):
            assert (a @ b).dtype == torch.float32, precision


@pytest.mark.slow
def test_the_trainer_records_the_precision_it_ran_in(tmp_path):
    # --precision fp16 on the CPU trains in fp32 (no fp16 there); training.json says so
    from training import train

    data = image_tree(tmp_path / "data", n=8)
    out = tmp_path / "run"
    assert train.main([*TINY, "--data", str(data), "--out", str(out), "--steps", "1", "--workers", "0",
                       "--data-mode", "memory", "--device", "cpu", "--precision", "fp16"]) == 0
    r = json.loads((out / "training.json").read_text())
    assert r["precision"] == resolve_precision(CPU, "fp16", training=True) == "fp32"
    assert r["args"]["precision"] == "fp16"  # what was asked stays in the record of the options
