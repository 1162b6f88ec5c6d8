"""The test lanes: CI runs the README's command 2 (the whole suite) with CI=true, where a
missing dev dependency or Chromium fails instead of skipping; the README's fast lane
(``-m "not slow"``) leaves out the slow tests and keeps tests from every test file."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest
from helpers import REPO, chromium, missing, need

CI_RUN = REPO / ".ci" / "run"
FAST = '.venv/bin/python -m pytest -q -m "not slow"'
# Test files whose every test is slow, and why (each is checked to be so).
ONLY_SLOW = {
    "test_training_ddp.py": "two training processes under torchrun",
    "test_training_resume.py": "training processes killed or stopped, then resumed",
    "test_server_browser.py": "ComfyUI's editor in Chromium",
    "test_space_browser.py": "the Space's page in Chromium",
    "test_space_video_browser.py": "the Space's video section in Chromium",
    "test_comfyui_real.py": "a real ComfyUI checkout (CCC_COMFYUI_DIR, by hand)",
    "test_gpu_bulk.py": "the GPU bulk script end to end at its smoke size",
    "test_hub_errors.py": "one fresh process loading torch and segment-anything",
}


def test_a_missing_dev_dependency_skips_here_and_fails_in_ci(monkeypatch, tmp_path):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not there"):
        missing("not there")
    with pytest.raises(pytest.skip.Exception, match="no_such_module_here is not installed"):
        need("no_such_module_here")
    assert need("json").dumps([1]) == "[1]"
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"not there \(CI=true"):
        missing("not there")
    with pytest.raises(pytest.fail.Exception, match="no_such_module_here is not installed"):
        need("no_such_module_here")
    monkeypatch.setenv("PATH", str(tmp_path))  # no Chromium on it
    with pytest.raises(pytest.fail.Exception, match="Chromium is not installed"):
        chromium()


def readme_command(n: int) -> str:
    """README command ``n`` as .ci/run reads it: with .ci/run's own function."""
    function = re.search(r"^readme_command\(\) \{\n.*?^\}\n", CI_RUN.read_text(), re.S | re.M).group(0)
    r = subprocess.run(["bash", "-c", f"{function}readme_command {n}"], cwd=REPO, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_ci_runs_the_whole_suite_with_ci_set_and_the_readme_gives_the_fast_lane():
    one, two = readme_command(1), readme_command(2)
    assert one.startswith("python3 -m venv .venv") and "ccc colorize examples/grey" in one
    assert two.endswith(".venv/bin/python -m pytest -q") and "-m " not in two.split("pytest", 1)[1]  # every test
    script = CI_RUN.read_text()
    assert script.index("export CI=true") < script.index('bash -euo pipefail -c "$cmd2"')
    assert script.index("export CI=true") > script.index("rm -rf .venv")  # not before .venv's check
    tests = (REPO / "README.md").read_text().split("\n## Tests\n", 1)[1].split("\n## ", 1)[0]
    assert FAST in tests and "Command 2" in tests


def _slow(decorators: list[ast.expr]) -> bool:
    return any("mark.slow" in ast.unparse(d) for d in decorators)


def fast_and_slow_tests(path: Path) -> tuple[list[str], list[str]]:
    """(fast, slow) test function names of a test file, by its ``slow`` marks."""
    tree = ast.parse(path.read_text())
    marked = [n for n in tree.body if isinstance(n, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)]
    whole = any("mark.slow" in ast.unparse(n.value) for n in marked)
    fast, slow = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            (slow if whole or _slow(node.decorator_list) else fast).append(node.name)
    return fast, slow


def test_every_test_file_has_tests_in_the_fast_lane():
    files = sorted((REPO / "tests").glob("test_*.py"))
    assert len(files) > 30
    split = {f.name: fast_and_slow_tests(f) for f in files}
    without = sorted(name for name, (fast, _) in split.items() if not fast)
    assert without == sorted(ONLY_SLOW), f"give each a fast test or name it in ONLY_SLOW with the reason: {without}"
    assert all(split[name][1] for name in ONLY_SLOW)
    assert sum(len(slow) for _, slow in split.values()) > 10  # the lane does leave tests out
