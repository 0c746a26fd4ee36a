"""The algorithms' maths and learners: PPO (:mod:`.ppo`), DQN, SAC, TD3, their shared targets and optimizer."""
