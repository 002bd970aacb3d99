"""DistributedDataParallel on CPU for every trainable task. One torchrun launch of two
gloo processes runs a sweep (`-m`) over the tasks at smoke scale, the jobs sharing the
process group; each task's replicas end identical and log the same metrics as a
single-process run, and the deterministic tasks (float64, fixed steps) reach the same
numbers. A task whose one-example training set cannot be split is refused clearly."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli_command, cli_env, compose_config

from aca.train import ConfigError, run
from aca.train.config import build_task
from aca.train.distributed import DistInfo
from aca.train.trainer import Trainer

# Every trainable task of configs/task (cifar and mujoco through test configs that point
# them at small fake data), and the dummy task with plain SGD in float64.
TASKS = ["dummy_sgd64", "vdp", "sines", "mujoco_cached", "digits", "cifar10_fake",
         "cifar100_fake"]
# A fixed-step solver: each example's computation does not depend on the batch it sits in
# (an adaptive solver picks its steps per batch).
SWEEP = ("trainer=smoke", "solver=rk4", "solver.step_size=0.25")
EXACT = {"dummy_sgd64": ("train_loss", "test_mse"), "vdp": ("train_loss", "test_mse", "test_mu")}
TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")


@pytest.fixture(scope="module")
def ddp_results(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    sweep_dir = tmp_path_factory.mktemp("ddp")
    done = subprocess.run(cli_command("-m", f"task={','.join(TASKS)}", *SWEEP,
                                      f"data_dir={data_dir}", f"hydra.sweep.dir={sweep_dir}",
                                      launcher=TORCHRUN),
                          cwd=sweep_dir, env=cli_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return {task: json.loads((sweep_dir / f"{index}_aca-rk4-seed0" / "result.json").read_text())
            for index, task in enumerate(TASKS)}


@pytest.mark.parametrize("task", TASKS)
def test_two_gloo_ranks_train_each_task_like_one_process(
        ddp_results: dict[str, dict], data_dir: Path, tmp_path: Path, task: str) -> None:
    ddp = ddp_results[task]
    assert ddp["world_size"] == 2 and ddp["epochs"] == 2
    assert ddp["ddp_replica_max_diff"] == 0.0  # gradients were averaged: replicas identical
    assert all(math.isfinite(value) for value in ddp["final"].values())
    single = run(compose_config(f"task={task}", *SWEEP, f"data_dir={data_dir}"), tmp_path)
    assert single["world_size"] == 1
    assert ddp["final"].keys() == single["final"].keys()  # the task's own metrics too
    for key in EXACT.get(task, ()):
        assert ddp["final"][key] == pytest.approx(single["final"][key], rel=1e-10), key


def test_a_one_trajectory_task_refuses_to_split(tmp_path: Path) -> None:
    """three_body fits one trajectory: two processes cannot share it."""
    cfg = compose_config("task=three_body", "trainer=smoke", "task.n_train=5", "task.n_test=5",
                         "task.T_train=0.1", "task.T_test=0.2")
    with pytest.raises(ConfigError, match="batch_size=1 cannot be split evenly over 2 DDP "
                                          "processes; three_body's training set has 1 "
                                          "example.*one process"):
        Trainer(cfg, build_task(cfg), tmp_path, DistInfo(rank=0, world_size=2))


def test_finish_leaves_the_process_group_once(tmp_path: Path) -> None:
    """The end of a normal run: a barrier, then the group is gone (a second call, or the
    interpreter's exit hook, has nothing left to do)."""
    import torch.distributed as dist

    from aca.train import distributed
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    distributed.finish()
    assert not dist.is_initialized()
    distributed.finish()
    distributed._leave()


def test_end_rank_leaves_the_group_and_exits_at_once(tmp_path: Path) -> None:
    """A rank ends with its output and logs flushed and exit status 0, skipping the
    interpreter's teardown (where gloo aborted ranks); without a process group it returns."""
    script = f"""
import atexit, logging, sys
import torch.distributed as dist
from aca.train import distributed
distributed.end_rank()
print("no group: returned")
atexit.register(print, "teardown ran")
dist.init_process_group("gloo", init_method="file://{tmp_path / 'store'}", rank=0,
                        world_size=1)
logging.basicConfig(filename="{tmp_path / 'log'}", level=logging.INFO)
logging.info("logged")
print("in a group", end="")
distributed.end_rank()
print("not reached")
sys.exit(3)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "no group: returned\nin a group"
    assert "logged" in (tmp_path / "log").read_text()
