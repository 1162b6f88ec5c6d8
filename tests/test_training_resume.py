"""Kill a real training process mid-run, resume it, and compare with an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch
from helpers import TINY, env, image_tree, python
from safetensors.torch import load_file

from training.checkpoint import load_checkpoint

STEPS = 100  # long enough after the first checkpoint (step 3) that a late-scheduled parent still kills mid-run


def _cmd(data, out, *extra):
    return [python(), "-m", "training.train", *TINY, "--data", str(data), "--out", str(out), "--steps", str(STEPS),
            "--data-mode", "stream", "--workers", "1", "--ckpt-every", "3", "--seed", "7", *extra]


@pytest.mark.slow
def test_killed_run_resumes_on_the_same_trajectory(tmp_path):
    data = image_tree(tmp_path / "data", n=24)
    e = env()

    # The uninterrupted reference run.
    ref = tmp_path / "ref"
    subprocess.run(_cmd(data, ref), env=e, check=True, capture_output=True, timeout=300)

    # The same run, killed with SIGKILL as soon as its first checkpoint is on disk.
    run = tmp_path / "run"
    proc = subprocess.Popen(_cmd(data, run), env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = run / "checkpoint.pt"
    deadline = time.time() + 240
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (run / "training.json").exists(), "the run finished before it could be killed"
    killed_at = load_checkpoint(ckpt)["step"]
    assert 3 <= killed_at < STEPS and killed_at % 3 == 0

    # The same command with --resume continues from the checkpoint to the end.
    res = subprocess.run(_cmd(data, run, "--resume"), env=e, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert f"resuming from {ckpt} at step {killed_at}" in res.stdout

    a = json.loads((ref / "training.json").read_text())
    b = json.loads((run / "training.json").read_text())
    assert [s for s, _ in b["loss_curve"]] == list(range(1, STEPS + 1))
    assert b["loss_curve"] == a["loss_curve"]  # bit for bit on CPU
    wa, wb = load_file(ref / "model.safetensors"), load_file(run / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    # the losses moved: the comparison is not between two untrained models
    assert a["loss_curve"][-1][1] < a["loss_curve"][0][1]
    # the saved model is the weight average (on by default), resumed exactly with the rest
    state = load_checkpoint(ref / "checkpoint.pt")
    ema = {k.removeprefix("module."): v for k, v in state["ema"].items()}
    assert all(torch.equal(wa[k], ema[k]) for k in wa)
    assert not all(torch.equal(wa[k], state["model"][k]) for k in wa)


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_the_run_resumes(tmp_path):
    # Ctrl-C reaches the whole process group (trainer and its decode workers): the trainer
    # finishes the step, writes a checkpoint and exits 130; its workers do not crash it.
    data = image_tree(tmp_path / "data", n=24)
    run = tmp_path / "run"
    cmd = _cmd(data, run)
    cmd[cmd.index("--steps") + 1] = "100000"
    cmd[cmd.index("--ckpt-every") + 1] = "100000"  # only the signal makes a checkpoint
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines = []
    for line in proc.stdout:  # the log lines (no progress bar) say how far it got
        lines.append(line)
        if line.startswith("step 5/"):
            break
    os.killpg(proc.pid, signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    log = "".join(lines) + rest
    assert proc.returncode == 130, log[-2000:]
    assert "stopped by SIGINT" in log and "Traceback" not in log
    saved = load_checkpoint(run / "checkpoint.pt")
    assert saved["step"] >= 5 and f"at step {saved['step']};" in log
    assert not (run / "training.json").exists()

    # --resume may extend or shorten the run (--steps), never change its trajectory options.
    short = cmd[:]
    short[short.index("--steps") + 1] = str(saved["step"] + 3)
    res = subprocess.run([*short, "--resume"], env=env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads((run / "training.json").read_text())
    assert r["steps"] == saved["step"] + 3 and r["resumed"]
    assert [s for s, _ in r["loss_curve"]] == list(range(1, saved["step"] + 4))

    changed = [*short, "--resume", "--batch", "8", "--p", "4"]
    res = subprocess.run(changed, env=env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "--batch was 4, now 8" in res.stderr and "--p was 10.0, now 4.0" in res.stderr
    fresh = subprocess.run(short, env=env(), capture_output=True, text=True, timeout=300)  # no --resume
    assert fresh.returncode == 2 and "holds a run already" in fresh.stderr
    assert load_checkpoint(run / "checkpoint.pt")["step"] == saved["step"] + 3  # untouched
