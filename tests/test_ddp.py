"""DistributedDataParallel on CPU: two gloo processes under torchrun keep identical
parameters and match a single process trained on the combined batches."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch
from conftest import cli_command, cli_env

from aca.train import run

# float64 and a fixed-step solver: each example's computation is independent of the
# batch it sits in (an adaptive solver picks its steps per batch), and SGD without
# momentum keeps the comparison a plain function of the averaged gradients.
RECIPE = ("task=dummy", "task.dtype=float64", "solver=rk4", "solver.step_size=0.25",
          "task.optimizer.name=sgd", "task.optimizer.momentum=0.0", "task.optimizer.lr=0.1",
          "task.epochs=2", "trainer.device=cpu", "trainer.progress=false")


def test_two_gloo_ranks_match_a_single_process_run(dummy_config, tmp_path) -> None:
    ddp_dir = tmp_path / "ddp"
    launcher = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2")
    done = subprocess.run(cli_command(*RECIPE, "trainer=ddp", "trainer.device=cpu",
                                      f"hydra.run.dir={ddp_dir}", launcher=launcher),
                          cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp_result = json.loads((ddp_dir / "result.json").read_text())
    assert ddp_result["world_size"] == 2
    assert ddp_result["ddp_replica_max_diff"] == 0.0  # ranks ended with identical parameters

    single_result = run(dummy_config(*RECIPE), tmp_path / "single")
    ddp_state = torch.load(ddp_dir / "last.pt", weights_only=False)["model"]
    single_state = torch.load(tmp_path / "single" / "last.pt", weights_only=False)["model"]
    assert ddp_state.keys() == single_state.keys()
    for name, value in single_state.items():
        torch.testing.assert_close(ddp_state[name], value, rtol=1e-10, atol=1e-12, msg=name)
    for key in ("train_loss", "test_mse"):
        assert ddp_result["final"][key] == pytest.approx(single_result["final"][key], rel=1e-10)
