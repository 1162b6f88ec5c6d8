"""What the trainer says when a run cannot go on as asked: a corrupt checkpoint, --resume
with nothing to resume, a second Ctrl-C. Real processes, tiny models."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from helpers import TINY, env, image_tree, python


def _cmd(data, out, *extra, steps=4):
    return [python(), "-m", "training.train", *TINY, "--data", str(data), "--out", str(out), "--steps", str(steps),
            "--data-mode", "memory", "--workers", "1", "--seed", "3", *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return image_tree(tmp_path_factory.mktemp("data"), n=12)


@pytest.mark.slow
@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut off here", os.urandom(4096)],
                         ids=["empty", "truncated", "random"])
def test_a_corrupt_checkpoint_is_one_error_line(tmp_path, data, content):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(content)
    r = subprocess.run(_cmd(data, tmp_path / "run", "--resume"), env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr and lines[-1].startswith("error: ")
    assert "not a readable training checkpoint" in lines[-1] and "delete it to start afresh" in lines[-1]


@pytest.mark.slow
def test_resume_without_a_checkpoint_says_it_starts_afresh(tmp_path, data):
    r = subprocess.run(_cmd(data, tmp_path / "run", "--resume"), env=env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"--resume: no checkpoint at {tmp_path / 'run' / 'checkpoint.pt'}; starting a fresh run" in r.stderr
    assert (tmp_path / "run" / "model.safetensors").is_file()


# The trainer, with the step after the first signal held until the second one lands (the
# case of a long step): without the hold the trainer may finish that step before the second
# signal arrives, and stop cleanly instead (the first signal's behaviour, tested elsewhere).
HOLD_AFTER_FIRST_SIGNAL = """
import sys, time
import training.train as t
real = t.all_done
def all_done(done, *rest):
    while done:  # the first signal is handled; the run waits here for the second
        time.sleep(0.05)
    return real(done, *rest)
t.all_done = all_done
raise SystemExit(t.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_second_ctrl_c_during_training_says_where_the_run_stands(tmp_path, data):
    cmd = _cmd(data, tmp_path / "run", "--ckpt-every", "2", steps=100000)
    cmd[1:3] = ["-c", HOLD_AFTER_FIRST_SIGNAL]  # python -c ... instead of python -m training.train
    proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("step 3/"):
            proc.send_signal(signal.SIGINT)
        if "stopping after this step" in line:  # the first signal is handled: the second aborts at once
            proc.send_signal(signal.SIGINT)
            break
    rest, _ = proc.communicate(timeout=120)
    out = "".join(seen) + rest
    assert proc.returncode == 130, out[-2000:]
    assert "stopped by SIGINT at step" not in out and "before training started" not in out
    assert "interrupted during training; the last checkpoint (step 2) is" in out or \
        "interrupted during training; the last checkpoint (step 4) is" in out, out[-2000:]
    assert "Traceback" not in out


def test_saved_and_exported_model_files_follow_the_umask(tmp_path):
    from helpers import make_model

    old = os.umask(0o022)
    try:
        make_model().save_pretrained(tmp_path / "model")
    finally:
        os.umask(old)
    modes = {f.name: f.stat().st_mode & 0o777 for f in (tmp_path / "model").iterdir()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o644, modes
