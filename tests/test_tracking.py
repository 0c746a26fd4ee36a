"""Experiment trackers (marl.tracking) with the real libraries: W&B offline run files read back record by
record, an MLflow SQLite store read back with MlflowClient, resume into the same tracked runs, and the
one-line errors of an unknown backend or a missing extra."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from marl.api import train
from marl.config import ConfigError, load_config
from marl.record import record
from marl.tracking import attach_artifacts, check_backends, read_ids

# CartPole PPO: 256 env steps per iteration, evaluations at 512 and 1024.
TINY = ("configs/cartpole_ppo.yaml", "total_env_steps=512", "eval.interval=512", "eval.episodes=2", "eval.num_envs=2",
        "checkpoint.interval=0", "log.tensorboard=false", "log.progress=false", "log.backends=[wandb, mlflow]")


@pytest.fixture
def wandb_home(tmp_path, monkeypatch):
    """Keep W&B's caches and settings out of the home directory."""
    for var in ("WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    monkeypatch.delenv("WANDB_MODE", raising=False)


def wandb_records(path: Path) -> list:
    """The protobuf records of an offline ``run-<id>.wandb`` file: a 7-byte W&B header, then LevelDB log
    blocks of 32 KiB whose chunks (7-byte header: crc32, length, type FULL=1/FIRST=2/MIDDLE=3/LAST=4)
    join into records."""
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    records, chunks, pos = [], [], 7
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # block trailer padding
            pos += left
            continue
        chunks.append(data[pos + 7:pos + 7 + length])
        pos += 7 + length
        if kind in (1, 4):
            rec = pytest.importorskip("wandb.proto.wandb_internal_pb2").Record()
            rec.ParseFromString(b"".join(chunks))
            records.append(rec)
            chunks = []
    return records


def _key(item) -> str:
    """An item's key: W&B writes it either as ``key`` or as the parts of ``nested_key``."""
    return item.key or "/".join(item.nested_key)


def wandb_offline_run(run_dir: Path, index: int) -> dict:
    """Run id, config, history rows and artifact files of the ``index``-th offline run in ``run_dir/wandb``."""
    dirs = sorted((run_dir / "wandb").glob("offline-run-*"))
    records = wandb_records(next(dirs[index].glob("run-*.wandb")))
    out: dict = {"dirs": len(dirs), "history": [], "artifacts": []}
    for r in records:
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run_id"] = r.run.run_id
            out["config"] = {_key(i): json.loads(i.value_json) for i in r.run.config.update}
        elif kind == "config":
            out["config"].update({_key(i): json.loads(i.value_json) for i in r.config.update})
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in r.history.item})
        elif kind == "artifact":
            out["artifacts"] += [m.path for m in r.artifact.manifest.contents]
    return out


def test_wandb_and_mlflow_record_the_run_and_resume_continues_it(tmp_path, wandb_home):
    pytest.importorskip("wandb")
    mlflow_tracking = pytest.importorskip("mlflow.tracking")
    run_dir = tmp_path / "run"
    first = train(load_config(TINY[0], [*TINY[1:], f"run_dir={run_dir}"]))
    ids = read_ids(run_dir)
    assert set(ids) == {"wandb", "mlflow"}
    resumed = train(load_config(run_dir / "config.yaml", [f"resume={run_dir}", "total_env_steps=1024"]))
    assert read_ids(run_dir) == ids  # the same tracked runs were reopened, not new ones

    evals = {e["env_steps"]: e["ep_return"] for e in resumed["eval_history"]}
    assert sorted(evals) == [512, 1024] and evals[512] == first["final_eval"]["ep_return"]

    # MLflow: one run in the experiment holds both parts, with the config as params.
    client = mlflow_tracking.MlflowClient(ids["mlflow"]["tracking_uri"])
    runs = client.search_runs([ids["mlflow"]["experiment_id"]])
    assert [r.info.run_id for r in runs] == [ids["mlflow"]["run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["algo.lr"] == "0.001" and run.data.params["env.id"] == "CartPole-v1"
    assert run.data.params["algo.gae_lambda"] == "0.8" and "run_dir" not in run.data.params
    history = client.get_metric_history(run.info.run_id, "eval/ep_return")
    assert sorted((m.step, m.value) for m in history) == sorted(evals.items())
    rollout_steps = {m.step for m in client.get_metric_history(run.info.run_id, "rollout/ep_return")}
    assert rollout_steps <= {256, 512, 768, 1024} and max(rollout_steps) == 1024
    assert "checkpoints/best.pt" in [a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")]
    assert "summary.json" in [a.path for a in client.list_artifacts(run.info.run_id)]

    # W&B: two offline parts with the same run id; the tags, x-axis and values of the run directory.
    part1, part2 = wandb_offline_run(run_dir, 0), wandb_offline_run(run_dir, 1)
    assert part1["dirs"] == 2 and part1["run_id"] == part2["run_id"] == ids["wandb"]["run_id"]
    assert part1["config"]["algo"]["lr"] == 0.001 and part1["config"]["env"]["id"] == "CartPole-v1"
    logged = {row["env_steps"]: row["eval/ep_return"] for part in (part1, part2) for row in part["history"]
              if "eval/ep_return" in row}
    assert logged == evals
    assert {row["env_steps"] for row in part2["history"] if "rollout/ep_return" in row} <= {768, 1024}
    assert all("env_steps" in row for row in part1["history"] + part2["history"])
    assert "checkpoints/best.pt" in part2["artifacts"] and "summary.json" in part2["artifacts"]

    # A video recorded after the run joins the same tracked runs.
    video = record(run_dir, episodes=1).path
    assert attach_artifacts(run_dir, [video]) == ["wandb", "mlflow"]
    assert [a.path for a in client.list_artifacts(run.info.run_id, "videos")] == [f"videos/{video.name}"]
    part3 = wandb_offline_run(run_dir, 2)
    assert part3["run_id"] == ids["wandb"]["run_id"] and part3["artifacts"] == [f"videos/{video.name}"]
    assert client.get_run(run.info.run_id).info.status == "FINISHED"


def test_unknown_backend_is_refused_with_a_hint(make_config):
    with pytest.raises(ConfigError, match=r"log.backends: unknown backend\(s\) \['wandbb'\]"):  # when the config loads
        make_config("configs/cartpole_ppo.yaml", "log.backends=[tensorboard, wandbb]")
    cfg = make_config("configs/cartpole_ppo.yaml")
    cfg.log.backends = ["tensorboard", "wandbb"]  # changed after loading: the trackers still refuse it, with a hint
    with pytest.raises(ConfigError, match=r"log.backends: unknown backend 'wandbb'; did you mean wandb\?"):
        check_backends(cfg.log)


def test_missing_extra_is_a_one_line_error_before_training(make_config, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if marl[mlflow] were not installed
    cfg = make_config("configs/cartpole_ppo.yaml", "total_env_steps=256", "log.backends=[mlflow]")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    assert str(err.value).startswith("log.backends: mlflow is not installed; pip install 'marl[mlflow]'")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run" / "checkpoints" / "latest.pt").exists()
    assert not (tmp_path / "run" / "tracking.json").exists()


def test_log_tensorboard_false_drops_tensorboard(make_config):
    assert check_backends(make_config(None, "log.backends=[tensorboard]").log) == []
    assert check_backends(make_config(None, "log.tensorboard=true").log) == ["tensorboard"]
