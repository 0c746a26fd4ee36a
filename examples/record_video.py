"""Record a video of a trained policy with ``marl.record.record`` (what ``marl record`` runs).

Trains a short MPE simple_spread run (or takes ``--run``), then writes one episode as an MP4 or GIF
(chosen by the file name). The episode is the first episode of ``marl eval``, so its return matches::

    python examples/record_video.py --out videos/spread.mp4
    python examples/record_video.py --steps 3200 --out /tmp/spread.gif
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import marl
from marl.record import record

CONFIG = Path(__file__).resolve().parent.parent / "configs" / "simple_spread_ppo.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", default="", help="a run directory or checkpoint (default: train one)")
    parser.add_argument("--steps", type=int, default=50_000, help="total_env_steps when training one here")
    parser.add_argument("--run-dir", default="runs/examples/record", help="run directory when training one here")
    parser.add_argument("--out", default="videos/simple_spread.mp4", help="video file, .mp4 or .gif")
    parser.add_argument("--episodes", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # frames are drawn off-screen; no window needed
    run_dir = args.run or marl.train(CONFIG, total_env_steps=args.steps, run_dir=args.run_dir,
                                     env__backend="sync").run_dir
    video = record(run_dir, out=args.out, episodes=args.episodes)
    returns = ", ".join(f"{sum(e.returns.values()):.2f}" for e in video.episodes)
    print(f"wrote {video.path}: {video.frames} frames at {video.fps:g} fps; episode return(s) {returns}")


if __name__ == "__main__":
    main()
