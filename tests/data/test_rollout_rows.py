"""GroupBatch.index / index_chunks take rows with index_select (take_rows): the same as advanced indexing."""

from __future__ import annotations

import torch

from marl.data.rollout import GroupBatch, take_rows


def _batch(lead: tuple[int, ...], hidden: bool) -> GroupBatch:
    g = torch.Generator().manual_seed(0)
    obs = torch.randn(*lead, 3, 4, generator=g)
    f = lambda: torch.randn(*lead, 3, generator=g)  # noqa: E731
    return GroupBatch(obs, obs, torch.randint(0, 5, (*lead, 3), generator=g), f(), f(), f(), f(),
                      torch.rand(*lead, 3, generator=g) > 0.3, torch.rand(*lead, 3, 5, generator=g) > 0.5,
                      torch.randn(lead[-1], 3, 7, generator=g) if hidden else None,
                      (torch.rand(*lead, 3, generator=g) > 0.8) if hidden else None)


def test_take_rows_equals_advanced_indexing_on_every_dtype_and_axis():
    rows = torch.tensor([5, 0, 5, 2])
    for x in (torch.randn(6, 3, 2), torch.arange(18).reshape(6, 3), torch.rand(6, 3) > 0.5):
        assert torch.equal(take_rows(x, rows), x[rows])
        assert torch.equal(take_rows(x.transpose(0, 1), rows, 1), x.transpose(0, 1)[:, rows])


def test_index_and_index_chunks_equal_advanced_indexing_and_keep_critic_in_shared():
    flat = _batch((20,), hidden=False)
    rows = torch.randperm(20, generator=torch.Generator().manual_seed(1))[:7]
    mb = flat.index(rows)
    for got, full in zip(mb, flat):
        assert (got is None) == (full is None) and (got is None or torch.equal(got, full[rows]))
    assert mb.critic_in is mb.obs  # the local critic reads obs: indexed once
    seq = _batch((4, 10), hidden=True)
    chunks = torch.tensor([9, 3, 4])
    mb = seq.index_chunks(chunks)
    assert torch.equal(mb.hidden, seq.hidden[chunks])
    for name in ("obs", "action", "log_prob", "value", "advantage", "ret", "alive", "action_mask", "reset"):
        assert torch.equal(getattr(mb, name), getattr(seq, name)[:, chunks]), name
