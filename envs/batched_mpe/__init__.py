"""PettingZoo's MPE (the ``mpe2`` package) stepped as arrays: ``E`` copies of one scenario at once.

Faithful to mpe2 1.1.1: loaded with the same state (:meth:`BatchedMPE.set_state_from_mpe2`) and fed
the same actions, observations, rewards, terminations and truncations equal mpe2's parallel
env's (``tests/our_envs/test_batched_mpe.py`` checks 1,000 random steps per scenario and action type
to 1e-5). The world is simulated in float64 like mpe2; observations are float32 (mpe2 casts
them too), rewards float32 (mpe2 returns Python floats). Only the random starts differ: each
copy draws its own from its own generator.

Scenarios (:func:`make` also takes mpe2's module names, ``"simple_spread_v3"``, ...), with
mpe2's keyword arguments:

* ``simple_spread``: ``N=3, local_ratio=0.5, curriculum=False, terminate_on_success=False,
  num_agent_neighbors=None, num_landmark_neighbors=None``; groups ``agent``.
* ``simple_speaker_listener``: groups ``speaker``, ``listener``.
* ``simple_reference``: ``local_ratio=0.5``; groups ``agent``.
* ``simple_adversary``: ``N=2, num_agent_neighbors=None, num_landmark_neighbors=None``;
  groups ``adversary``, ``agent``.
* ``simple_tag``: ``num_good=1, num_adversaries=3, num_obstacles=2, curriculum=False,
  terminate_on_success=False, num_agent_neighbors=None, num_landmark_neighbors=None``;
  groups ``adversary``, ``agent``.

Every scenario also takes ``dynamic_rescaling`` (it only scales mpe2's rendering). Not
supported: ``render_mode`` (no rendering) and ``benchmark_data`` (no infos).

Interface (``E = num_envs``, ``A_g`` agents in group ``g``; every dict is keyed by group)::

    env = make("simple_spread", num_envs=E, continuous_actions=False, max_cycles=25, N=3)
    env.agents                    # mpe2's agent names, mpe2's order
    env.groups                    # {"agent": ["agent_0", ...]}: agents by name prefix
    env.observation_space(agent)  # equal to mpe2's (Box(-inf, inf, (obs_dim,), float32))
    env.action_space(agent)       # equal to mpe2's (Discrete(n) or Box(0, 1, (n,), float32))
    env.state_space               # Box(-inf, inf, (state_dim,), float32)
    obs = env.reset(seed=0)       # {g: float32 [E, A_g, obs_dim]}
    out = env.step(actions)       # actions {g: int [E, A_g]} or {g: float [E, A_g, act_dim]}
    out.obs, out.final_obs        # {g: float32 [E, A_g, obs_dim]}
    out.reward                    # {g: float32 [E, A_g]}
    out.terminated, out.truncated # {g: bool [E, A_g]}
    out.done_envs                 # bool [E]
    env.state()                   # float32 [E, state_dim]: all agents' observations, agent order
    env.observe()                 # {g: float32 [E, A_g, obs_dim]}, the current observations

``step`` resets the copies that end (``done_envs``) in the same call: ``obs`` holds their
fresh start and ``final_obs`` the observation the step reached (elsewhere ``final_obs`` is
``obs``). MPE ends all agents of a copy together: truncated at ``max_cycles`` steps,
terminated only where a scenario's ``terminate_on_success`` applies (and not on the last
step, where mpe2 truncates instead).

Seeding: ``reset(seed)`` with an int gives copy ``i`` a generator from child ``i`` of
``SeedSequence(seed)`` (a copy's episodes do not depend on ``E``); a list gives one seed per
copy; ``None`` goes on with the current generators. Each reset of a copy draws from its own
generator, in order: its goal indices (``floor(u * L)``), then ``x, y`` of every agent and
landmark (uniform in ``[-1, 1]``; ``[-0.9, 0.9]`` for simple_tag's obstacles). These are not
mpe2's draws: mpe2 seeded alike starts elsewhere.

Actions as mpe2 decodes them: discrete ``Discrete(5 * dim_c)`` for movable speakers
(move ``a % 5``: no-op, -x, +x, -y, +y; say ``a // 5``), ``Discrete(5)`` for silent movers,
``Discrete(dim_c)`` for simple_speaker_listener's speaker; continuous ``Box(0, 1)`` vectors
``[no-op, -x, +x, -y, +y, words...]`` (force ``(a2 - a1, a4 - a3)`` times the agent's accel,
words as the communication state), clipped to ``[0, 1]``.

Where this differs from mpe2 1.1.1 on purpose:

* random starts: each copy draws its own (above), so a seed does not give mpe2's starts;
* curriculum stages: mpe2's ``set_curriculum_stage`` does nothing (``BaseScenario`` defines
  ``curriculum_stage`` as a property whose setter is a no-op, so mpe2 stays at stage 0); here it
  moves to the stage mpe2 documents. Stage 0, the only one mpe2 reaches, matches mpe2;
* out-of-bounds continuous actions are clipped without mpe2's warning; no infos, no rendering.

For checks against mpe2: ``set_state_from_mpe2(i, mpe2_env)`` copies a live mpe2 env's
positions, velocities, communication states, goal assignments, per-agent speeds (simple_tag's
curriculum) and step counter into copy ``i``.
"""

from __future__ import annotations

import re
from typing import Any

from ._core import BatchedMPE, BatchedStep, WorldLayout, group_by_prefix
from ._scenarios import SimpleAdversary, SimpleReference, SimpleSpeakerListener, SimpleSpread, SimpleTag

#: scenario name -> class
SCENARIOS: dict[str, type[BatchedMPE]] = {
    "simple_spread": SimpleSpread,
    "simple_speaker_listener": SimpleSpeakerListener,
    "simple_reference": SimpleReference,
    "simple_adversary": SimpleAdversary,
    "simple_tag": SimpleTag,
}


def scenario_class(scenario: str) -> type[BatchedMPE]:
    """The class of ``scenario``: a name of :data:`SCENARIOS` or mpe2's module name (``simple_tag_v3``)."""
    key = re.sub(r"_v\d+$", "", scenario.rsplit(".", 1)[-1])
    if key not in SCENARIOS:
        raise ValueError(f"unknown MPE scenario {scenario!r}; known: {sorted(SCENARIOS)}")
    return SCENARIOS[key]


def make(
    scenario: str,
    num_envs: int,
    continuous_actions: bool = False,
    max_cycles: int = 25,
    **scenario_kwargs: Any,
) -> BatchedMPE:
    """``num_envs`` copies of an MPE scenario; ``scenario_kwargs`` are mpe2's (``N``, ``local_ratio``, ...).

    Args:
        scenario: ``simple_spread``, ``simple_speaker_listener``, ``simple_reference``,
            ``simple_adversary``, ``simple_tag``, or the mpe2 module name (``simple_spread_v3``).
        num_envs: env copies ``E`` (>= 1).
        continuous_actions: ``Box(0, 1)`` actions instead of ``Discrete`` (mpe2's flag).
        max_cycles: steps per episode before truncation (>= 1).
    """
    return scenario_class(scenario)(
        num_envs=num_envs, continuous_actions=continuous_actions, max_cycles=max_cycles, **scenario_kwargs
    )


__all__ = [
    "SCENARIOS",
    "BatchedMPE",
    "BatchedStep",
    "SimpleAdversary",
    "SimpleReference",
    "SimpleSpeakerListener",
    "SimpleSpread",
    "SimpleTag",
    "WorldLayout",
    "group_by_prefix",
    "make",
    "scenario_class",
]
