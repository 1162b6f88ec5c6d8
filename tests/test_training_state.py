"""The trainer's run state (training.checkpoint.RunState): saved and restored as one thing."""

from __future__ import annotations

import random

import torch

from ccc_nodes.core.classes import ColorClasses
from training.checkpoint import RunState, load_checkpoint
from training.dist import Dist
from training.train import weight_average


def _state(seed: int) -> RunState:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    return RunState(model, opt, torch.amp.GradScaler("cpu", enabled=False), weight_average(model, 0.9),
                    ColorClasses(10), torch.arange(ColorClasses(10).num_bins, dtype=torch.float64))


def _train_a_step(state: RunState) -> None:
    state.optimizer.zero_grad(set_to_none=True)
    state.model.train()(torch.randn(8, 3)).square().mean().backward()
    state.optimizer.step()
    state.step += 1
    state.ema.update(state.model, step=state.step)


def test_a_saved_state_restores_whole_and_the_run_goes_on_identically(tmp_path):
    a = _state(0)
    for _ in range(3):
        _train_a_step(a)
    a.elapsed, a.losses, a.seen, a.drawn = 12.5, [(1, 2.0), (3, 1.5)], 24, 4
    a.skipped_ids["grey"].update({5, 9})
    a.save(tmp_path / "checkpoint.pt", Dist(), {"seed": 0})
    after_save = random.random(), torch.rand(1)

    b = _state(1)  # other weights, other RNG: everything comes from the checkpoint
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    assert ckpt["args"] == {"seed": 0} and ColorClasses.from_config(ckpt["classes"]).K == a.classes.K
    assert b.restore(ckpt, rank=0)
    assert (b.step, b.elapsed, b.losses, b.seen, b.drawn) == (3, 12.5, [(1, 2.0), (3, 1.5)], 24, 4)
    assert b.skipped_ids == {"corrupt": set(), "grey": {5, 9}}
    assert (random.random(), torch.rand(1)) == after_save  # the RNG states came back
    for x, y in ((a.model, b.model), (a.ema, b.ema)):
        assert all(torch.equal(v, y.state_dict()[k]) for k, v in x.state_dict().items())
    torch.manual_seed(7)
    _train_a_step(a)
    torch.manual_seed(7)
    _train_a_step(b)  # the optimiser's moments were restored too
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in a.model.state_dict().items())

    # a rank the checkpoint's run did not have takes rank 0's part
    assert _state(2).restore(ckpt, rank=3)


def test_a_checkpoint_without_a_weight_average_starts_it_at_the_resumed_weights(tmp_path):
    a = _state(0)
    _train_a_step(a)
    a.save(tmp_path / "checkpoint.pt", Dist(), {})
    ckpt = load_checkpoint(tmp_path / "checkpoint.pt")
    del ckpt["ema"]  # as written by a run with --ema 0, or before the average existed
    b = _state(1)
    assert not b.restore(ckpt, rank=0)
    assert all(torch.equal(v, b.model.state_dict()[k.removeprefix("module.")]) for k, v in b.ema.state_dict().items())
