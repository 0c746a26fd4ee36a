"""``marl.ray_runtime.RayConnection`` leaves the process as it found it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

if os.environ.get("CI"):
    import ray  # noqa: F401 - CI installs every extra: a missing one fails here, never skips
else:
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install -e .[ray])")

from marl.ray_runtime import AUTH_MODE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import os
from marl.ray_runtime import AUTH_MODE, RayConnection

conn = RayConnection("", 10.0, num_cpus=1)
assert conn.started
print("during", os.environ.get(AUTH_MODE))
conn.close()
print("after", os.environ.get(AUTH_MODE))
"""


@pytest.mark.parametrize("mode", [None, "disabled"])
def test_a_local_instance_leaves_the_auth_mode_of_the_process_as_found(mode):
    """Starting a local instance with RAY_AUTH_MODE unset, Ray turns token authentication on for the whole process
    (RAY_AUTH_MODE=token in os.environ, which every process started later inherits: a Ray node started afterwards
    for another cluster would require tokens that cluster never sends). The connection puts the variable back as
    it was when it closes; an explicit mode is kept throughout. In a fresh interpreter: Ray keeps the mode of its
    first start for the life of the process."""
    env = {k: v for k, v in os.environ.items() if k != AUTH_MODE} | ({} if mode is None else {AUTH_MODE: mode})
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith(("during", "after"))]
    assert lines == [f"during {mode or 'token'}", f"after {mode}"]
