"""marl: multi-agent reinforcement learning on PettingZoo and Gymnasium environments."""

__version__ = "0.1.0"
