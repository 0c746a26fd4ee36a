"""Conv stack choice and sizes, and the single-network encoders."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from marl.nets import NATURE_CONV, SMALL_CONV, CNNEncoder, MLPEncoder, choose_conv_stack, conv_output_hw
from marl.nets.encoders import conv_flat_dim, resolve_encoder


def test_nature_stack_sizes_by_hand():
    # 84 -> (84-8)/4+1 = 20 -> (20-4)/2+1 = 9 -> 9-3+1 = 7
    assert conv_output_hw(84, 84, NATURE_CONV) == (7, 7)
    assert conv_flat_dim(84, 84, NATURE_CONV) == 3136
    # 36 -> 8 -> 3 -> 1 is the smallest image the Nature stack accepts
    assert conv_output_hw(36, 44, NATURE_CONV) == (1, 2)
    assert conv_output_hw(35, 35, NATURE_CONV)[0] == 0


def test_small_stack_sizes_by_hand():
    # padding 1 keeps 7 -> 7, stride 2 gives ceil(7/2) = 4, then 4
    assert conv_output_hw(7, 7, SMALL_CONV) == (4, 4)
    assert conv_output_hw(11, 11, SMALL_CONV) == (6, 6)
    assert conv_output_hw(1, 1, SMALL_CONV) == (1, 1)


def test_stack_rule():
    assert choose_conv_stack(84, 84) == NATURE_CONV
    assert choose_conv_stack(36, 36) == NATURE_CONV
    assert choose_conv_stack(35, 84) == SMALL_CONV
    assert choose_conv_stack(7, 7) == SMALL_CONV
    with pytest.raises(ValueError, match="positive"):
        choose_conv_stack(0, 5)


def test_resolve_encoder():
    assert resolve_encoder("auto", (4, 4, 3)) == "cnn"
    assert resolve_encoder("auto", (18,)) == "mlp"
    assert resolve_encoder("mlp", (4, 4, 3)) == "mlp"
    with pytest.raises(ValueError, match="image shape"):
        resolve_encoder("cnn", (18,))
    with pytest.raises(ValueError, match="unknown encoder"):
        resolve_encoder("transformer", (18,))


@pytest.mark.parametrize("shape", [(7, 7, 3), (11, 11, 1), (40, 36, 2)])
def test_cnn_encoder_divides_by_255_and_matches_a_manual_forward(shape):
    torch.manual_seed(0)
    enc = CNNEncoder(shape, features=16)
    x = torch.randint(0, 256, (3, *shape), dtype=torch.uint8)
    out = enc(x)
    assert out.shape == (3, 16)
    h = x.permute(0, 3, 1, 2).float() / 255.0
    convs = [m for m in enc.net if isinstance(m, torch.nn.Conv2d)]
    stack = choose_conv_stack(shape[0], shape[1])
    for conv, spec in zip(convs, stack):
        assert (conv.stride[0], conv.kernel_size[0]) == (spec.stride, spec.kernel)
        assert conv.padding[0] == spec.padding
        h = F.relu(conv(h))
    lin = [m for m in enc.net if isinstance(m, torch.nn.Linear)][0]
    torch.testing.assert_close(out, F.relu(lin(h.flatten(1))))


def test_mlp_encoder_flattens_and_has_the_requested_width():
    torch.manual_seed(0)
    enc = MLPEncoder((3, 4), hidden=(8, 5), activation="relu")
    assert enc(torch.randn(6, 3, 4)).shape == (6, 5)
    assert (enc(torch.randn(6, 3, 4)) >= 0).all()
    with pytest.raises(ValueError, match="hidden"):
        MLPEncoder((3,), hidden=())
