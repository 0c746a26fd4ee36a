"""CUDA: the learners on a GPU take the steps they take on the CPU, and whole runs train on ``device=cuda``.

Oracle: the same initial networks and the same batch, updated on the CPU and on the GPU, give the same
parameters to float32 rounding (TF32 is off for these matrix products). Skipped without a CUDA device:
CI machines have none; the GPU machine runs this file (``pytest tests/test_cuda.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

ROOT = Path(__file__).resolve().parents[1]
UPDATES = 4


@pytest.fixture(autouse=True)
def no_tf32():
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def _flat(params) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).cpu() for p in params])


def _to(batch, device):
    return type(batch)(*[x.to(device) if isinstance(x, torch.Tensor) else x for x in batch])


PPO_CASES = {
    "shared": ("configs/simple_spread_ppo.yaml", []),
    "independent_central": ("configs/simple_adversary_ppo.yaml", ["model.sharing=independent", "model.critic=central"]),
    "recurrent": ("configs/simple_spread_ppo.yaml", ["model.recurrent=gru", "algo.bptt_len=8"]),
}


@pytest.mark.parametrize("case", list(PPO_CASES))
def test_ppo_update_on_the_gpu_equals_the_cpu(make_config, case):
    from marl.algos.ppo import PPOLearner
    from marl.on_policy.policy import ActorCriticPolicy
    from marl.on_policy.trainer import OnPolicyTrainer

    path, overrides = PPO_CASES[case]
    cfg = make_config(path, "env.backend=sync", "env.num_envs=4", "algo.num_steps=16", "algo.num_minibatches=2",
                      "algo.update_epochs=2", *overrides)
    if case == "recurrent" and not hasattr(cfg.model, "recurrent"):
        pytest.skip("no recurrent policies in this tree")
    trainer = OnPolicyTrainer(cfg)
    try:
        state = trainer.policy.state_dict()
        rollout = trainer.collector.collect()
        for name, buf in rollout.groups.items():
            buf.finish(rollout.last_value[name], cfg.algo.gamma, cfg.algo.gae_lambda, cfg.algo.bootstrap_on_truncation)
        batches = {name: buf.flat() for name, buf in rollout.groups.items()}
        spec = trainer.spec
    finally:
        trainer.close()
    results = {}
    for device in ("cpu", "cuda"):
        policy = ActorCriticPolicy(spec, cfg, device)
        policy.load_state_dict(state)
        learner = PPOLearner(policy, cfg.algo)
        generator = torch.Generator().manual_seed(0)
        on_device = {g: _to(b, device) for g, b in batches.items()}
        for _ in range(UPDATES):
            learner.update(on_device, num_minibatches=2, norm_advantage=True, generator=generator)
        results[device] = _flat(policy.net.parameters())
    assert not torch.equal(results["cpu"], _flat(ActorCriticPolicy(spec, cfg, "cpu").net.parameters()))
    torch.testing.assert_close(results["cuda"], results["cpu"], atol=1e-5, rtol=1e-4)


OFF_CASES = {
    "dqn": ("configs/spread_dqn.yaml", []),
    "sac": ("configs/pendulum_sac.yaml", []),
    "td3": ("configs/pendulum_td3.yaml", ["algo.policy_noise=0.0"]),
}


@pytest.mark.parametrize("case", list(OFF_CASES))
def test_off_policy_update_on_the_gpu_equals_the_cpu(make_config, case):
    """DQN, SAC (its sampled actions come from a generator per device, so SAC's update is compared on its
    critic step only, through the TD errors), TD3 without target noise."""
    from marl.off_policy.actor import build_actor, build_learner
    from marl.off_policy.replay import to_batch
    from marl.off_policy.trainer import OffPolicyTrainer

    path, overrides = OFF_CASES[case]
    cfg = make_config(path, "env.backend=sync", "env.num_envs=2", "algo.learning_starts=64", "algo.batch_size=32",
                      "model.hidden=[32, 32]", *overrides)
    trainer = OffPolicyTrainer(cfg)
    try:
        for _ in range(40):
            trainer.collect(1.0)
        sample = {g: buf.sample(32, trainer.rng, 1.0) for g, buf in trainer.replay.items()}
        batches = {g: to_batch(s, trainer.actor.obs_norm.get(g), "cpu") for g, s in sample.items()}
        policy_state, learner_state = trainer.actor.state_dict(), trainer.learner.state_dict()
        spec = trainer.spec
    finally:
        trainer.close()
    results = {}
    for device in ("cpu", "cuda"):
        actor = build_actor(spec, cfg, device)
        actor.load_state_dict(policy_state)
        learner = build_learner(actor, cfg)
        learner.load_state_dict(learner_state)
        on_device = {g: _to(b, device) for g, b in batches.items()}
        out = learner.update(on_device)
        if case != "sac":
            for _ in range(UPDATES - 1):
                learner.update(on_device)
            results[device] = _flat(learner.trainable())
        else:
            results[device] = torch.cat([t.reshape(-1).cpu() for t in out.td_error.values()])
    torch.testing.assert_close(results["cuda"], results["cpu"], atol=1e-5, rtol=1e-4)


RUNS = {
    "ppo": ("configs/simple_spread_ppo.yaml", ["algo.num_steps=50", "env.num_envs=4"]),
    "ppo_batched": ("configs/simple_spread_ppo.yaml", ["env.backend=batched", "env.num_envs=64",
                                                       "algo.num_steps=25"]),
    "dqn": ("configs/spread_dqn.yaml", ["algo.learning_starts=200", "env.num_envs=4"]),
    "sac": ("configs/pendulum_sac.yaml", ["algo.learning_starts=200"]),
    "td3": ("configs/pendulum_td3.yaml", ["algo.learning_starts=200"]),
    "qmix": ("configs/spread_qmix.yaml", ["algo.learning_starts=200", "env.num_envs=4"]),
    "appo": ("configs/simple_spread_appo.yaml", ["env.num_envs=4", "env.num_workers=2"]),
}


@pytest.mark.parametrize("case", list(RUNS))
def test_a_run_trains_on_the_gpu_and_its_checkpoint_acts_on_the_cpu(make_config, case):
    import marl
    from marl.api import train

    path, overrides = RUNS[case]
    if not (ROOT / path).exists():
        pytest.skip(f"{path} is not in this tree")
    cfg = make_config(str(ROOT / path), "device=cuda", "total_env_steps=1600", "eval.interval=800",
                      "eval.episodes=2", "eval.num_envs=2", *overrides)
    summary = train(cfg)
    assert summary["env_steps"] >= 1600 and torch.isfinite(torch.tensor(summary["final_eval"]["ep_return"]))
    result = marl.evaluate(f"{cfg.run_dir}/checkpoints/latest.pt", episodes=2, device="cpu")
    assert torch.isfinite(torch.tensor(result["ep_return"]))
