"""marl record: frames come from one env, include each episode's final state, and land in GIF / MP4 files."""

import gymnasium
import imageio.v2 as imageio
import numpy as np
import pytest

from marl.cli import main
from marl.config import load_config
from marl.env.make import env_factory
from marl.on_policy.policy import ActorCriticPolicy
from marl.record import RecordError, capture_episodes, default_output, pad_even, recording_env, write_video
from marl.seeding import eval_seeds

TINY_CARTPOLE = ["total_env_steps=256", "eval.interval=0", "eval.episodes=1", "eval.num_envs=1",
                 "log.progress=false", "log.tensorboard=false", "checkpoint.interval=0"]


def _untrained(env_id: str, kwargs: dict):
    cfg = load_config(None, [f"env.id={env_id}", f"env.kwargs={kwargs}"])
    probe = env_factory(cfg)()
    spec = probe.spec
    probe.close()
    return ActorCriticPolicy(spec, cfg), cfg


class _ActionLog:
    """A policy that remembers the env actions it gave."""

    def __init__(self, policy):
        self.policy, self.actions = policy, []

    def act(self, obs, state, **kw):
        out = self.policy.act(obs, state, **kw)
        self.actions.append({g: a.copy() for g, a in out.env_action.items()})
        return out


def _runs_of_equal_frames(frames) -> int:
    return 1 + sum(not np.array_equal(a, b) for a, b in zip(frames, frames[1:]))


def test_record_cli_on_a_trained_cartpole_run_writes_a_gif(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "configs/cartpole_ppo.yaml", f"run_dir={run}", *TINY_CARTPOLE]) == 0
    capsys.readouterr()
    gif = tmp_path / "cartpole.gif"
    assert main(["record", str(run), "--out", str(gif)]) == 0
    line = capsys.readouterr().out
    assert f"wrote {gif}" in line
    frames = imageio.mimread(gif)
    assert len(frames) > 1 and frames[0].shape[:2] == (400, 600)
    assert main(["eval", str(run), "--episodes", "1", "--json"]) == 0  # same seed: same episode as marl eval
    ret = float(capsys.readouterr().out.split('"ep_return": ')[1].split(",")[0])
    assert f"return {ret:.3f} (length {int(ret)})" in line  # CartPole: return == length
    assert f": {int(ret) + 1} frames" in line  # L decisions + the reset frame
    assert len(frames) <= int(ret) + 1  # Pillow merges identical consecutive frames
    assert default_output(run / "checkpoints" / "best.pt", 0) == run / "videos" / "best-seed0.mp4"


def test_frames_are_the_env_frames_including_the_final_one_before_reset():
    policy, cfg = _untrained("CartPole-v1", {})
    log = _ActionLog(policy)
    frames, episodes, fps = capture_episodes(log, cfg, episodes=2, seed=4)
    lengths = [e.length for e in episodes]
    assert len(frames) == sum(n + 1 for n in lengths) and fps == 50.0
    # oracle: replay the same actions in a plain Gymnasium env seeded as the recorder seeds its env copy
    env = gymnasium.make("CartPole-v1", render_mode="rgb_array")
    env.reset(seed=eval_seeds(4, 1)[0])
    expected, actions = [env.render()], iter(log.actions)
    for k, n in enumerate(lengths):
        if k:
            env.reset()
            expected.append(env.render())
        for _ in range(n):
            env.step(int(next(actions)["agent"][0, 0]))
            expected.append(env.render())  # the last one is the terminal state, drawn before any reset
    env.close()
    assert len(expected) == len(frames)
    for got, want in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_grid_nav_multi_agent_recording_to_gif_and_mp4(tmp_path):
    policy, cfg = _untrained("envs.grid_nav", {"n_agents": 3, "size": 5})
    frames, episodes, fps = capture_episodes(policy, cfg, episodes=2, seed=0)
    assert len(frames) == sum(e.length + 1 for e in episodes)
    assert all(f.shape == (80, 80, 3) and f.dtype == np.uint8 for f in frames)  # one view of the whole grid
    again, _, _ = capture_episodes(policy, cfg, episodes=2, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))  # deterministic
    gif = write_video(frames, tmp_path / "grid.gif", fps)
    back = imageio.mimread(gif)
    assert len(back) == _runs_of_equal_frames(frames) > 1
    np.testing.assert_array_equal(np.asarray(back[0])[..., :3], frames[0])  # flat colours survive the palette
    mp4 = write_video(frames, tmp_path / "grid.mp4", fps)
    reader = imageio.get_reader(mp4)
    decoded = [f for f in reader]  # noqa: C416 - list(reader) asks len(), which is inf for ffmpeg streams
    assert reader.get_meta_data()["fps"] == pytest.approx(fps)
    reader.close()
    assert len(decoded) == len(frames) and decoded[0].shape == (80, 80, 3)


def test_pad_even_and_bad_outputs(tmp_path):
    frame = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    padded = pad_even(frame)
    assert padded.shape == (4, 6, 3)
    np.testing.assert_array_equal(padded[:3, :5], frame)
    np.testing.assert_array_equal(padded[3, :5], frame[2])
    np.testing.assert_array_equal(padded[:3, 5], frame[:, 4])
    with pytest.raises(RecordError, match=r"\.mp4 or \.gif"):
        write_video([frame], tmp_path / "x.avi", 10)


class _NoRender(gymnasium.Env):
    metadata = {"render_modes": []}
    observation_space = gymnasium.spaces.Box(-1, 1, (2,))
    action_space = gymnasium.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode


@pytest.mark.filterwarnings("ignore:.*render_mode='rgb_array' that is not in the possible render_modes")
def test_an_env_without_rgb_array_gives_a_clear_error():
    gymnasium.register("MarlTestNoRender-v0", entry_point=_NoRender)
    try:
        cfg = load_config(None, ["env.id=MarlTestNoRender-v0"])
        with pytest.raises(RecordError, match="rgb_array"):
            recording_env(cfg, [])
    finally:
        del gymnasium.registry["MarlTestNoRender-v0"]
