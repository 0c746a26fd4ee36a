"""PPO update threads: resolution from the config and the scoped thread count."""

import pytest
import torch

from marl.config import load_config
from marl.on_policy.trainer import torch_threads, update_threads


@pytest.mark.parametrize("cpus, workers, expected",
                         [(2, 2, 1), (3, 2, 1), (4, 2, 2), (16, 8, 4), (16, 64, 1), (1, 1, 1)])
def test_update_threads_auto_adds_threads_only_with_cores_beyond_the_run(monkeypatch, cpus, workers, expected):
    """Auto borrows cores only when the process has more than main + workers (bench/bench_update_threads.py:
    +6% when the machine is idle, 3-6x slower once a neighbour runs, on 2 cores with 2 workers)."""
    import marl.on_policy.trainer as trainer

    monkeypatch.setattr(trainer, "available_cpus", lambda: cpus)
    auto = load_config(None, [])
    assert update_threads(auto, workers=workers) == expected
    assert update_threads(auto, workers=0) == auto.torch_threads == 1
    assert update_threads(auto, workers=workers, on_cpu=False) == 1  # a GPU learner leaves the CPU threads alone
    assert update_threads(load_config(None, ["update_threads=3"]), workers=0) == 3
    assert update_threads(load_config(None, ["update_threads=0", "torch_threads=2"]), workers=2) == 2


def test_torch_threads_restores_the_count_even_after_an_error():
    before = torch.get_num_threads()
    with torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(before + 1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with torch_threads(0):
        assert torch.get_num_threads() == before


def test_bad_update_threads_is_a_config_error():
    from marl.config import ConfigError

    with pytest.raises(ConfigError, match="update_threads"):
        load_config(None, ["update_threads=-2"])
