"""Reference returns of MPE Speaker-Listener: what a near-optimal listener scores, with and without the message.

The listener (a point mass) is rewarded ``-|p - goal|^2`` per step and per agent (the speaker gets the same), so the
team return of a 25-step episode (our scale: summed over both agents) is ``-2 * sum_t |p_t - goal|^2``. Two
planners steer the listener with receding-horizon search over every sequence of ``--horizon`` discrete actions
(exact dynamics, then a coasting estimate for the steps beyond), towards

* **the goal** (a listener that decodes a perfect message: a near-upper bound on what any learned team reaches),
* **the centroid of the three landmarks** (a listener that ignores the message: the minimizer of the expected
  squared distance, the field's "local minimum" of this task, which a team stays in until the speaker's message
  carries the goal).

Both are measured on mpe2 itself (the planner's actions stepped through ``mpe2.simple_speaker_listener_v4``), and on
the same start states under the original multiagent-particle-envs dynamics, where an action changes the velocity
*before* the position moves (mpe2 moves the position first: an action acts one step later). The script first checks
its dynamics model against mpe2 on random actions.

Scale: the near-optimal return under the original dynamics bounds the published cells if they were on our scale;
the EPyMARL paper's best Speaker-Listener cells (MAPPO -10.68, MAA2C -10.71, QMIX -11.56) lie above it, so its
cells are not on our scale, and its text (returns "divided by the number of agents", epymarl issue #29) does not
fix the factor for this task: bench/README.md compares through these references instead.

    python bench/speaker_listener_bounds.py                    # 100 episodes, horizon 6 (about a minute)
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np

DT, DAMPING, SENSITIVITY = 0.1, 0.25, 5.0  # mpe2 / MPE World defaults; the listener's mass is 1
MOVES = np.array([[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]], float) * SENSITIVITY  # discrete actions 0..4


def listener_step(pos: np.ndarray, vel: np.ndarray, force: np.ndarray, position_first: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One physics step of the listener ``[..., 2]``: mpe2 (``position_first``) or the original MPE order."""
    if position_first:
        return pos + vel * DT, vel * (1 - DAMPING) + force * DT
    vel = vel * (1 - DAMPING) + force * DT
    return pos + vel * DT, vel


def plan(pos: np.ndarray, vel: np.ndarray, target: np.ndarray, steps_left: int, seqs: np.ndarray,
         position_first: bool) -> int:
    """The first action of the action sequence ``seqs [S, H]`` with the least summed squared distance to
    ``target``, the steps beyond the horizon priced at the point where the listener would coast to."""
    p = np.repeat(pos[None], len(seqs), 0)
    v = np.repeat(vel[None], len(seqs), 0)
    cost = np.zeros(len(seqs))
    h = min(seqs.shape[1], steps_left)
    for k in range(h):
        p, v = listener_step(p, v, MOVES[seqs[:, k]], position_first)
        cost += ((p - target) ** 2).sum(-1)
    coast = p + v * DT * (1 - DAMPING) / DAMPING
    cost += (steps_left - h) * ((coast - target) ** 2).sum(-1)
    return int(seqs[cost.argmin(), 0])


def check_model(episodes: int = 3) -> float:
    """Largest gap between the model and mpe2's listener over random-action episodes."""
    from mpe2 import simple_speaker_listener_v4

    env = simple_speaker_listener_v4.parallel_env(max_cycles=25, continuous_actions=False)
    rng = np.random.default_rng(0)
    gap = 0.0
    for ep in range(episodes):
        env.reset(seed=ep)
        listener = env.unwrapped.world.agents[1]
        pos, vel = listener.state.p_pos.copy(), listener.state.p_vel.copy()
        for _ in range(25):
            a = int(rng.integers(5))
            env.step({"speaker_0": 0, "listener_0": a})
            pos, vel = listener_step(pos, vel, MOVES[a], position_first=True)
            gap = max(gap, float(np.abs(listener.state.p_pos - pos).max()))
    env.close()
    return gap


def run(episodes: int, horizon: int) -> dict[str, dict[str, float]]:
    """Mean team return (our scale) of the two planners, on mpe2 and under the original dynamics."""
    from mpe2 import simple_speaker_listener_v4

    env = simple_speaker_listener_v4.parallel_env(max_cycles=25, continuous_actions=False)
    seqs = np.array(list(itertools.product(range(5), repeat=horizon)))
    out: dict[str, dict[str, list[float]]] = {"goal": {"mpe2": [], "original": []},
                                              "centroid": {"mpe2": [], "original": []}}
    for ep in range(episodes):
        env.reset(seed=10_000 + ep)
        world = env.unwrapped.world
        goal = world.agents[0].goal_b.state.p_pos.copy()
        centroid = np.mean([lm.state.p_pos for lm in world.landmarks], axis=0)
        start = world.agents[1].state.p_pos.copy()
        for name, target in (("goal", goal), ("centroid", centroid)):
            env.reset(seed=10_000 + ep)
            listener = env.unwrapped.world.agents[1]
            ret = 0.0
            for t in range(25):
                a = plan(listener.state.p_pos, listener.state.p_vel, target, 25 - t, seqs, True)
                _, reward, _, _, _ = env.step({"speaker_0": 0, "listener_0": a})
                ret += sum(reward.values())
            out[name]["mpe2"].append(ret)
            pos, vel, ret = start.copy(), np.zeros(2), 0.0
            for t in range(25):
                a = plan(pos, vel, target, 25 - t, seqs, False)
                pos, vel = listener_step(pos, vel, MOVES[a], position_first=False)
                ret += -2.0 * float(((pos - goal) ** 2).sum())
            out[name]["original"].append(ret)
    env.close()
    return {k: {d: float(np.mean(v)) for d, v in row.items()} for k, row in out.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=100)
    p.add_argument("--horizon", type=int, default=6, help="actions searched exhaustively per decision (5**H)")
    a = p.parse_args()
    print(f"dynamics model vs mpe2 on random actions: largest position gap {check_model():.1e}")
    r = run(a.episodes, a.horizon)
    print(f"\nteam return (our scale, {a.episodes} episodes, horizon {a.horizon})")
    print("| listener steers to | mpe2 | original MPE dynamics |")
    print("| --- | --- | --- |")
    for name, label in (("goal", "the goal (a perfect message)"), ("centroid", "the landmarks' centroid (no message)")):
        print(f"| {label} | {r[name]['mpe2']:.2f} | {r[name]['original']:.2f} |")


if __name__ == "__main__":
    main()
