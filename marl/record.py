"""``marl record``: a video of a trained policy acting in its environment.

``marl record RUN_DIR_OR_CHECKPOINT [--out FILE.mp4|FILE.gif] [--episodes 1] [--fps N] [--seed S] [--stochastic]``

The policy is loaded from the checkpoint (a run directory means its ``checkpoints/best.pt``,
else ``latest.pt``). One env is built from the run's config (same env id, kwargs, groups and
preprocessing) with ``render_mode="rgb_array"``, so a multi-agent env gives one video of the
whole scene. The policy acts deterministically (the mode of its action distribution) unless
``--stochastic``.

Frames: one frame after each reset and one after each agent decision, taken from the env's
``render()`` *before* the adapter auto-resets, so the final state of every episode is in the
video. An episode of ``L`` decisions thus gives ``L + 1`` frames (with ``env.action_repeat = k``
the ``k - 1`` frames inside a repeat are not drawn). Episodes follow one another in one
video. The first episode uses the same env seed as the first episode of ``marl eval``
(``marl.env.eval_seeds(S, 1)[0]``, ``S`` = the run's seed unless ``--seed``), so its return
equals that of a one-episode evaluation.

Output: MP4 (H.264 through imageio-ffmpeg; frames padded by edge pixels to even sizes) or
GIF (imageio / Pillow; Pillow merges identical consecutive frames into one longer frame, so
a GIF may hold fewer frames than were drawn, with the same playing time), chosen by the file
extension. Default: ``RUN_DIR/videos/<checkpoint name>-seed<S>.mp4``. Default frame rate:
the env's ``metadata["render_fps"]`` divided by the action repeat, else 30.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import gymnasium
import numpy as np
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import BaseParallelWrapper, BaseWrapper

from marl.api import load_policy
from marl.checkpoint import CheckpointError, find_checkpoint
from marl.config import Config, ConfigError
from marl.env.adapters import Adapter
from marl.env.make import adapt, groups_of, make_raw_env, preprocess_of
from marl.env.sync import SyncVectorEnv
from marl.env.wrappers import apply_preprocess
from marl.evaluation import run_episodes
from marl.seeding import eval_seeds
from marl.types import EpisodeStats

VIDEO_SUFFIXES = (".mp4", ".gif")
DEFAULT_FPS = 30.0


class RecordError(ValueError):
    """A recording that cannot be made; the message names the problem and the fix."""


class Recording(NamedTuple):
    """What :func:`record` wrote.

    Attributes:
        path: the video file.
        frames: frames drawn (``sum(L_i + 1)`` over episodes; a GIF may store fewer, see module doc).
        episodes: the recorded episodes, in order.
        fps: frames per second of the video.
    """

    path: Path
    frames: int
    episodes: list[EpisodeStats]
    fps: float


# --------------------------------------------------------------------------- frame capture
def _grab(env: Any, frames: list[np.ndarray | None]) -> None:
    frame = env.render()
    frames.append(frame if isinstance(frame, np.ndarray) else None)


class _ParallelTap(BaseParallelWrapper):
    """Appends ``render()`` to ``frames`` after every reset and step of a parallel env."""

    def __init__(self, env: ParallelEnv, frames: list[np.ndarray | None]):
        super().__init__(env)
        self.frames = frames

    def reset(self, seed: int | None = None, options: dict | None = None) -> tuple[dict, dict]:
        out = self.env.reset(seed=seed, options=options)
        _grab(self.env, self.frames)
        return out

    def step(self, actions: dict) -> tuple[dict, dict, dict, dict, dict]:
        out = self.env.step(actions)
        _grab(self.env, self.frames)
        return out


class _AECTap(BaseWrapper):
    """As :class:`_ParallelTap` for turn-based envs; the ``None`` steps of finished agents draw nothing."""

    def __init__(self, env: AECEnv, frames: list[np.ndarray | None]):
        super().__init__(env)
        self.frames = frames

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        self.env.reset(seed=seed, options=options)
        _grab(self.env, self.frames)

    def step(self, action: Any) -> None:
        self.env.step(action)
        if action is not None:
            _grab(self.env, self.frames)


class _GymTap(gymnasium.Wrapper):
    """As :class:`_ParallelTap` for a Gymnasium env."""

    def __init__(self, env: gymnasium.Env, frames: list[np.ndarray | None]):
        super().__init__(env)
        self.frames = frames

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        out = self.env.reset(seed=seed, options=options)
        _grab(self.env, self.frames)
        return out

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        out = self.env.step(action)
        _grab(self.env, self.frames)
        return out


def recording_env(cfg: Config, frames: list[np.ndarray | None]) -> tuple[Adapter, float]:
    """One adapter of ``cfg``'s env rendering ``rgb_array`` frames into ``frames``; and its default fps.

    Built like :func:`marl.trainer.env_factory` (same id, kwargs, groups and preprocessing) with a
    frame tap between the preprocessing and the adapter, so frames are drawn before auto-resets.
    """
    try:
        raw = make_raw_env(cfg.env.id, dict(cfg.env.kwargs), render_mode="rgb_array")
    except TypeError as exc:
        raise RecordError(f"env {cfg.env.id!r} does not take render_mode='rgb_array' ({exc}); "
                          "marl record needs an env that renders RGB frames") from exc
    metadata = getattr(raw, "metadata", None) or {}
    modes = metadata.get("render_modes")
    if modes is not None and "rgb_array" not in modes:
        raw.close()
        raise RecordError(f"env {cfg.env.id!r} renders only {list(modes)}, not 'rgb_array'; "
                          "marl record needs an env that renders RGB frames")
    fps = float(metadata.get("render_fps") or DEFAULT_FPS) / cfg.env.action_repeat
    env = apply_preprocess(raw, preprocess_of(cfg.env))
    tap: Callable[[Any, list], Any]
    if isinstance(env, ParallelEnv):
        tap = _ParallelTap
    elif isinstance(env, AECEnv):
        tap = _AECTap
    elif isinstance(env, gymnasium.Env):
        tap = _GymTap
    else:
        env.close()
        raise RecordError(f"env {cfg.env.id!r} is neither a PettingZoo nor a Gymnasium env")
    return adapt(tap(env, frames), groups_of(cfg.env)), max(fps, 1.0)


def _as_rgb(frame: np.ndarray | None, env_id: str) -> np.ndarray:
    if frame is None:
        raise RecordError(f"env {env_id!r} returned no frame from render() with render_mode='rgb_array'; "
                          "marl record needs an env that renders RGB arrays")
    frame = np.asarray(frame)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
        raise RecordError(f"env {env_id!r} rendered an array of shape {frame.shape}, expected [H, W, 3]")
    if frame.dtype != np.uint8:
        frame = np.clip(frame, 0, 255).astype(np.uint8)
    return frame[..., :3]


def capture_episodes(
    policy: Any,
    cfg: Config,
    episodes: int = 1,
    seed: int | None = None,
    deterministic: bool = True,
    max_steps: int = 100_000,
) -> tuple[list[np.ndarray], list[EpisodeStats], float]:
    """Run ``episodes`` episodes of ``policy`` in one rendering env.

    Args:
        policy: a :class:`marl.multi_agent.policy.Policy` (anything with its ``act``).
        cfg: the run's config (env section).
        episodes: episodes to run, one after the other.
        seed: experiment seed (default ``cfg.seed``); the episodes are played by
            :func:`marl.evaluation.run_episodes` with the seeds of a one-copy ``marl eval``, so the
            first recorded episode is that evaluation's first episode, sampled actions included.
        deterministic: act with the mode of the action distribution; otherwise sample (torch's
            RNG is forked and seeded, the global state is left as it was).
        max_steps: safety bound on decisions in total.

    Returns:
        ``(frames, episodes, fps)``: ``uint8 [H, W, 3]`` frames (``L + 1`` per episode of
        ``L`` decisions), the finished episodes, and the env's default frame rate.
    """
    if episodes < 1:
        raise RecordError(f"episodes must be >= 1, got {episodes}")
    seed = cfg.seed if seed is None else seed
    frames: list[np.ndarray | None] = []
    adapter, fps = recording_env(cfg, frames)
    venv = SyncVectorEnv(lambda: adapter, 1)
    try:
        if frames:  # the adapter's probe reset drew one: an env that draws nothing fails here, not after the episodes
            _as_rgb(frames[-1], cfg.env.id)
        frames.clear()
        # marl eval's seeds with one env copy: the first episode is the first episode of an evaluation
        try:
            run = run_episodes(policy, venv, episodes, eval_seeds(seed, 2), deterministic, max_steps)
        except ValueError as exc:
            raise RecordError(f"{exc} (--max-steps)") from exc
    finally:
        venv.close()
    frames.pop()  # the auto-reset frame after the last episode, which is not recorded
    return [_as_rgb(f, cfg.env.id) for f in frames], run.episodes, fps


# --------------------------------------------------------------------------- writing
def pad_even(frame: np.ndarray) -> np.ndarray:
    """Pad ``[H, W, C]`` by repeating the last row / column so that ``H`` and ``W`` are even (H.264 needs it)."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def write_video(frames: list[np.ndarray], path: str | Path, fps: float) -> Path:
    """Write ``uint8 [H, W, 3]`` frames to ``path`` (``.mp4`` or ``.gif``) at ``fps`` frames per second."""
    import imageio.v2 as imageio

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise RecordError(f"{path}: unknown video type {path.suffix!r}; use a .mp4 or .gif file name")
    if not frames:
        raise RecordError("no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        imageio.mimwrite(path, frames, format="GIF", duration=1000.0 / fps, loop=0)
    else:
        imageio.mimwrite(path, [pad_even(f) for f in frames], format="FFMPEG", fps=fps, codec="libx264",
                         macro_block_size=1, pixelformat="yuv420p")
    return path


# --------------------------------------------------------------------------- entry points
def default_output(checkpoint: Path, seed: int) -> Path:
    """``RUN_DIR/videos/<checkpoint stem>-seed<seed>.mp4`` (``RUN_DIR`` holds ``checkpoints/``)."""
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return run_dir / "videos" / f"{checkpoint.stem}-seed{seed}.mp4"


def record(
    path: str | Path,
    out: str | Path | None = None,
    episodes: int = 1,
    fps: float | None = None,
    seed: int | None = None,
    deterministic: bool = True,
    max_steps: int = 100_000,
) -> Recording:
    """Load the policy at ``path`` (run directory or checkpoint), record ``episodes`` and write the video.

    Args:
        path: run directory or checkpoint file.
        out: ``.mp4`` or ``.gif`` file; default :func:`default_output`.
        episodes: episodes in the video.
        fps: frames per second; default the env's render fps / action repeat (else 30).
        seed: experiment seed of the env reset (default: the run's seed).
        deterministic: act with the distribution's mode (``False``: sample).
        max_steps: safety bound on decisions.
    """
    checkpoint = find_checkpoint(path, "best")
    policy, cfg, _ = load_policy(checkpoint)
    seed = cfg.seed if seed is None else seed
    frames, done, env_fps = capture_episodes(policy, cfg, episodes, seed, deterministic, max_steps)
    rate = float(fps) if fps else env_fps
    if rate <= 0:
        raise RecordError(f"fps must be > 0, got {fps}")
    target = Path(out) if out else default_output(checkpoint, seed)
    return Recording(write_video(frames, target, rate), len(frames), done, rate)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="marl record", description=__doc__.split("\n\n")[0].strip("`: "))
    p.add_argument("path", help="run directory (uses checkpoints/best.pt, else latest.pt) or checkpoint file")
    p.add_argument("--out", default="", help="video file, .mp4 or .gif (default RUN_DIR/videos/<ckpt>-seed<S>.mp4)")
    p.add_argument("--episodes", type=int, default=1, help="episodes in the video (default 1)")
    p.add_argument("--fps", type=float, default=0.0, help="frames per second (default: env render_fps / action repeat)")
    p.add_argument("--seed", type=int, default=None, help="env seed (default: the run's seed, as marl eval)")
    p.add_argument("--stochastic", action="store_true", help="sample actions instead of taking the mode")
    p.add_argument("--max-steps", type=int, default=100_000, help="safety bound on decisions (default 100000)")
    return p


def main(argv: list[str] | None = None) -> int:
    """``marl record`` entry point: prints the video path, frame count and episode returns."""
    args = build_parser().parse_args(argv)
    # Envs drawing with pygame initialise SDL's display and audio, which a video needs neither of (and
    # which print errors on headless machines); rgb_array frames are drawn off-screen either way.
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    try:
        rec = record(args.path, args.out or None, args.episodes, args.fps or None, args.seed,
                     not args.stochastic, args.max_steps)
    except (RecordError, CheckpointError, ConfigError) as exc:
        print(f"marl record: error: {exc}", file=sys.stderr)
        return 2
    returns = ", ".join(f"{sum(e.returns.values()):.3f}" for e in rec.episodes)
    lengths = ", ".join(str(e.length) for e in rec.episodes)
    print(f"wrote {rec.path}: {rec.frames} frames at {rec.fps:g} fps, {len(rec.episodes)} episode(s), "
          f"return {returns} (length {lengths})")
    return 0
