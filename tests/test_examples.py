"""Every script in examples/ runs, with a tiny budget, as a user would run it (a subprocess from another folder).

Each test checks what the script says it shows (a recorded env id, a written video, no illegal move ...),
not only that it exited 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, *args: str, cwd: Path) -> str:
    """Run ``examples/<name>`` in ``cwd``; return its stdout (the test fails with its output on an error)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SDL_VIDEODRIVER": "dummy", "SDL_AUDIODRIVER": "dummy"}
    proc = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env, check=False)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc.stdout


TESTED_HERE = ("train_pettingzoo.py", "custom_env.py", "gymnasium_single_agent.py", "compare_sharing.py",
               "deploy_policy.py", "record_video.py", "aec_masks.py")


def test_each_example_says_what_it_shows():
    for name in TESTED_HERE:
        text = (EXAMPLES / name).read_text()
        assert text.startswith('"""') and "python examples/" + name in text, f"{name}: a docstring with its command"


def test_train_pettingzoo(tmp_path):
    out = run_example("train_pettingzoo.py", "--steps", "1600", "--out", "run", cwd=tmp_path)
    assert "10-episode evaluation" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["env_steps"] == 1600


def test_custom_env_class_in_main_trains_on_worker_processes(tmp_path):
    out = run_example("custom_env.py", "--steps", "400", "--out", "run", cwd=tmp_path)
    assert "env.id recorded as 'unimportable:__main__:MatchBits'" in out
    assert "pass it again" in out and "one episode with the loaded policy" in out
    assert (tmp_path / "run" / "config.yaml").read_text().startswith("# NOTE:")


def test_gymnasium_single_agent(tmp_path):
    out = run_example("gymnasium_single_agent.py", "--steps", "512", "--out", "run", cwd=tmp_path)
    assert "one episode in a plain Gymnasium loop" in out


def test_compare_sharing(tmp_path):
    out = run_example("compare_sharing.py", "--steps", "1600", "--seeds", "0", "--out", "cmp", cwd=tmp_path)
    assert "report:" in out
    results = json.loads((tmp_path / "cmp" / "results.json").read_text())
    assert set(results["variants"]) == {"shared", "independent"}


def test_deploy_policy_on_a_plain_loop_then_record_it(tmp_path):
    out = run_example("deploy_policy.py", "--steps", "1600", "--out", "run", "--episodes", "2", cwd=tmp_path)
    assert "episode 1: team return" in out
    out = run_example("record_video.py", "--run", "run", "--out", "spread.gif", cwd=tmp_path)  # the same run
    assert "wrote spread.gif: 26 frames" in out and (tmp_path / "spread.gif").stat().st_size > 0


def test_aec_game_with_masks(tmp_path):
    out = run_example("aec_masks.py", "--steps", "1024", "--out", "run", "--games", "6", cwd=tmp_path)
    assert "6 games against a random player" in out and "no illegal move" in out
