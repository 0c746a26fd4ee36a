"""Networks: orthogonal init, encoders, action distributions and per-agent ensembles.

* :mod:`marl.nets.layers`: :func:`orthogonal_init`, :func:`mlp`, activations (:func:`~marl.nets.layers.activate`,
  :func:`~marl.nets.layers.fast_tanh`).
* :mod:`marl.nets.encoders`: conv stacks (Nature-DQN, small grids), :class:`CNNEncoder`, :class:`MLPEncoder`.
* :mod:`marl.nets.distributions`: :class:`MaskedCategorical`, :class:`DiagGaussian`,
  :class:`TanhGaussian`, :class:`AgentLogStd`, :func:`scale_action`, :func:`dueling_q`.
* :mod:`marl.nets.ensemble`: :class:`AgentNet` (shared / independent / selective
  parameter sets; ``batched | fork | loop`` strategies) (:func:`marl.multi_agent.groups.param_sets_for`
  builds the agent -> set map).
* :mod:`marl.nets.twin`: :class:`~marl.nets.twin.TwinMLP`, ``K`` independent MLP towers on one
  input held as one stacked module (a *twin*: PPO's actor and critic).
* :mod:`marl.nets.fused`: :func:`~marl.nets.fused.stacked_mlp`, a stacked MLP run as one
  *fused* autograd node (hand-written backward). In :mod:`marl.nets` "fused" means only this,
  not the fused Adam kernel of :mod:`marl.algos.optim` and not a twin.
"""

from marl.nets.distributions import (
    AgentLogStd,
    DiagGaussian,
    MaskedCategorical,
    TanhGaussian,
    dueling_q,
    scale_action,
    tanh_log_abs_det,
    unscale_action,
)
from marl.nets.encoders import (
    NATURE_CONV,
    NATURE_MIN_SIZE,
    SMALL_CONV,
    CNNEncoder,
    ConvSpec,
    MLPEncoder,
    choose_conv_stack,
    conv_output_hw,
)
from marl.nets.ensemble import STRATEGIES, AgentNet
from marl.nets.layers import ACTIVATIONS, HIDDEN_GAIN, mlp, orthogonal_init

__all__ = [
    "ACTIVATIONS",
    "HIDDEN_GAIN",
    "NATURE_CONV",
    "NATURE_MIN_SIZE",
    "SMALL_CONV",
    "STRATEGIES",
    "AgentLogStd",
    "AgentNet",
    "CNNEncoder",
    "ConvSpec",
    "DiagGaussian",
    "MLPEncoder",
    "MaskedCategorical",
    "TanhGaussian",
    "choose_conv_stack",
    "conv_output_hw",
    "dueling_q",
    "mlp",
    "orthogonal_init",
    "scale_action",
    "tanh_log_abs_det",
    "unscale_action",
]
