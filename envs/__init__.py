"""Environments of the marl project. This package never imports ``marl``.

Each module is an env id (``envs.grid_nav``, ...) and documents its spaces, rewards,
termination and truncation:

* ``grid_nav``: PettingZoo parallel, navigation to per-agent goals, world or egocentric frame.
* ``coop_gather``: PettingZoo parallel, cooperative gathering with hazards (agent death)
  and action masks in ``infos[agent]["action_mask"]``.
* ``multi_goal``: PettingZoo parallel, goal-conditioned point masses (one goal per agent).
* ``bit_flip``: Gymnasium, goal-conditioned bit flipping.
* ``goal_reach``: Gymnasium, goal-conditioned 2-D point mass.
* ``masked_cartpole``: Gymnasium, CartPole observed through positions only (no velocities).
* ``cue_recall``: PettingZoo parallel, recall a cue seen ``delay`` steps earlier (a memory task:
  feed-forward policies are held to chance).

PettingZoo modules expose ``parallel_env(**kwargs)``, Gymnasium ones ``env(**kwargs)``.
Importing this package also registers the Gymnasium envs as ``BitFlip-v0``,
``GoalReach-v0`` and ``MaskedCartPole-v0``, so
``gymnasium.make("envs:BitFlip-v0", n_bits=8)`` works anywhere.
"""

import gymnasium

for _env_id, _entry_point in (
    ("BitFlip-v0", "envs.bit_flip:BitFlipEnv"),
    ("GoalReach-v0", "envs.goal_reach:GoalReachEnv"),
    ("MaskedCartPole-v0", "envs.masked_cartpole:MaskedCartPoleEnv"),
):
    if _env_id not in gymnasium.registry:
        gymnasium.register(id=_env_id, entry_point=_entry_point)
