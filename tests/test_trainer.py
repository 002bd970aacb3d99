"""The shared trainer on the test-only dummy task: a smoke run per gradient method,
exact resume, checkpoint evaluation with a swapped solver, analyses, the optimizer and
learning-rate schedule configs and the wandb logger modes."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from dummy_task import SimulatedCrash
from omegaconf import OmegaConf

from aca import provenance
from aca.train import ConfigError, distributed, run
from aca.train.checkpoint import load
from aca.train.config import build_task, check_config
from aca.train.loggers import format_table, wandb_mode
from aca.train.optim import build_scheduler, exponential, multistep
from aca.train.trainer import Trainer

FLOAT64_RK4 = ("task.dtype=float64", "solver=rk4", "solver.step_size=0.25")


@pytest.mark.parametrize("method", ["aca", "adjoint", "naive"])
def test_smoke_run_trains_and_writes_the_run_records(dummy_config, tmp_path, method) -> None:
    result = run(dummy_config(f"method={method}"), tmp_path)
    history = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(row["epoch"]) for row in history] == [1, 2, 3]
    assert float(history[-1]["train_loss"]) < float(history[0]["train_loss"])
    assert all(int(row["nfe_forward"]) > 0 and float(row["time_s"]) > 0 for row in history)
    assert (int(history[0]["nfe_backward"]) > 0) == (method != "naive")
    assert [float(row["lr"]) for row in history] == [0.01, 0.01, 0.005]  # multistep at 2
    assert [int(row["step"]) for row in history] == [4, 8, 12]  # 4 batches per epoch
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["method"] == method and saved["final"]["epoch"] == 3
    assert saved["final"]["test_mse"] == pytest.approx(float(history[-1]["test_mse"]))
    assert saved["report"] == {"parameters": 25} and saved["command"]
    assert saved["provenance"] == provenance.stamp()  # which code made the record
    assert saved["best"]["test_mse"] == min(float(row["test_mse"]) for row in history)
    assert result["nfe_total"] == sum(int(row["nfe"]) for row in history)
    assert OmegaConf.load(tmp_path / "config.yaml").method.name == method
    assert load(tmp_path / "last.pt")["epoch"] == 3 and (tmp_path / "best.pt").is_file()


def test_the_log_line_leaves_out_counters_this_solve_cannot_make(dummy_config, tmp_path,
                                                                 caplog) -> None:
    """An explicit shared solve forms no Jacobian and has no per-sample steps: its log line
    says nothing of them (metrics.csv keeps the columns, at 0)."""
    with caplog.at_level("INFO", logger="aca.train.trainer"):
        run(dummy_config(), tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert lines and all("nfe_forward=" in line for line in lines)
    assert not any("jacobians" in line or "sample_nfe_forward" in line for line in lines)
    history = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert all(row["jacobians"] == "0" and row["sample_nfe_forward"] == "0" for row in history)


def test_training_is_gradient_method_agnostic(dummy_config, tmp_path) -> None:
    """With a fixed-step solver ACA's gradient equals naive backprop, so whole runs agree."""
    finals = [run(dummy_config(f"method={method}", *FLOAT64_RK4), tmp_path / method)["final"]
              for method in ("aca", "naive")]
    assert finals[0]["train_loss"] == pytest.approx(finals[1]["train_loss"], rel=1e-12)
    assert finals[0]["test_mse"] == pytest.approx(finals[1]["test_mse"], rel=1e-12)


def test_interrupted_run_resumes_to_the_same_result(dummy_config, tmp_path) -> None:
    """Dropout draws random numbers in every training batch: the resumed run must restore
    the RNG state of the checkpoint to train on the same masks."""
    epochs = ("task.epochs=4", "task.dropout=0.5")
    uninterrupted = run(dummy_config(*epochs), tmp_path / "whole")
    no_dropout = run(dummy_config("task.epochs=4"), tmp_path / "no_dropout")
    assert uninterrupted["final"]["train_loss"] != no_dropout["final"]["train_loss"]
    with pytest.raises(SimulatedCrash):  # 4 batches per epoch: dies inside epoch 2
        run(dummy_config(*epochs, "task.crash_after_batches=6"), tmp_path / "split")
    assert load(tmp_path / "split" / "last.pt")["epoch"] == 1
    resumed = run(dummy_config(*epochs), tmp_path / "split")
    for key in ("train_loss", "test_mse", "lr"):
        assert resumed["final"][key] == uninterrupted["final"][key]
    rows = list(csv.DictReader(open(tmp_path / "split" / "metrics.csv")))
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3, 4]
    continued = run(dummy_config("task.epochs=5", "task.dropout=0.5",
                                 f"ckpt={tmp_path / 'split' / 'last.pt'}"),
                    tmp_path / "continued")  # a new run dir, started from the old run's state
    continued_rows = list(csv.DictReader(open(tmp_path / "continued" / "metrics.csv")))
    assert continued["final"]["epoch"] == 5 and continued_rows[:4] == rows
    written = (tmp_path / "split" / "result.json").stat().st_mtime_ns
    with pytest.raises(ConfigError, match="finished run"):  # nothing to train: no restamping
        run(dummy_config(*epochs), tmp_path / "split")
    assert (tmp_path / "split" / "result.json").stat().st_mtime_ns == written
    restart = run(dummy_config("trainer.resume=false", "task.epochs=1"), tmp_path / "split")
    assert restart["final"]["epoch"] == 1  # resume=false starts over


def test_each_epoch_shuffles_the_training_set_anew(dummy_config, tmp_path) -> None:
    """Every epoch sees every example once, in an order that changes from epoch to epoch
    and depends only on (seed, epoch), so a resumed run sees the same batches."""
    cfg = dummy_config()
    trainer = Trainer(cfg, build_task(cfg), tmp_path, distributed.setup(False, "cpu"))
    orders = [[index for batch in trainer._train_batches(epoch) for index in batch]
              for epoch in range(3)]
    assert all(sorted(order) == list(range(cfg.task.train_size)) for order in orders)
    assert orders[0] != orders[1] != orders[2] != orders[0]
    again = Trainer(cfg, build_task(cfg), tmp_path, distributed.setup(False, "cpu"))
    assert [i for batch in again._train_batches(1) for i in batch] == orders[1]


def test_the_shuffle_follows_the_runs_seed(dummy_config, tmp_path) -> None:
    """Each seed of a sweep sees its own batch order (the spread over seeds behind the
    digits and Hopper verdicts counts it), and a seed always the same one."""
    def order(seed: int) -> list[int]:
        cfg = dummy_config(f"seed={seed}")
        trainer = Trainer(cfg, build_task(cfg), tmp_path, distributed.setup(False, "cpu"))
        return [index for batch in trainer._train_batches(0) for index in batch]

    assert order(0) != order(1) != order(2) != order(0)
    assert order(1) == order(1)


def test_a_resumed_run_keeps_its_best_checkpoint(dummy_config, tmp_path) -> None:
    """Resuming restores the best monitored value: the first epoch after a resume replaces
    best.pt only when it is better. (Monitoring the highest test MSE of a run whose MSE
    falls, best.pt is the first epoch's.)"""
    worst = ("trainer.monitor=test_mse", "trainer.monitor_mode=max")
    first = run(dummy_config(*worst, "task.epochs=1"), tmp_path)
    resumed = run(dummy_config(*worst, "task.epochs=3"), tmp_path)
    best = load(tmp_path / "best.pt")
    assert best["epoch"] == 1 and best["best"] == first["best"]["test_mse"]
    assert resumed["best"]["test_mse"] == first["best"]["test_mse"] > resumed["final"]["test_mse"]


def test_gradient_clipping_bounds_each_update(dummy_config, tmp_path) -> None:
    """With SGD (which, unlike Adam, follows the gradient's length) and a clipping norm of
    1e-9 the weights move by at most lr * 1e-9 per step: the loss stays where it began."""
    sgd = ("task.optimizer._target_=torch.optim.SGD", "task.optimizer.lr=0.1")
    free = run(dummy_config(*sgd), tmp_path / "free")["final"]["train_loss"]
    clipped = run(dummy_config(*sgd, "trainer.grad_clip=1e-9"), tmp_path / "clipped")
    first = float(next(csv.DictReader(open(tmp_path / "clipped" / "metrics.csv")))["train_loss"])
    assert clipped["final"]["train_loss"] == pytest.approx(first, rel=1e-6)
    assert free < 0.9 * first


def test_test_metrics_are_means_over_examples(dummy_config, tmp_path) -> None:
    """Batches of 16, 16 and 8 test examples: each batch's metric weighs by its size, so
    the result equals the metric of the whole test set at once (a fixed grid makes each
    example's output independent of its batch)."""
    cfg = dummy_config(*FLOAT64_RK4, "task.test_size=40", "task.epochs=1")
    result = run(cfg, tmp_path)
    task = build_task(cfg)
    model = task.model()
    model.load_state_dict(load(tmp_path / "last.pt")["model"])
    model.eval()
    _, test = task.datasets()
    assert result["final"]["test_mse"] == pytest.approx(task.evaluate(model, test[:], 0)["mse"],
                                                        rel=1e-12)


def test_eval_mode_swaps_the_solver_of_a_trained_checkpoint(dummy_config, tmp_path) -> None:
    trained = run(dummy_config(), tmp_path / "train")
    best = tmp_path / "train" / "best.pt"
    same = run(dummy_config("mode=eval", f"ckpt={best}"), tmp_path / "same")
    assert same["metrics"]["test_mse"] == pytest.approx(trained["best"]["test_mse"], rel=1e-6)
    swapped = run(dummy_config("mode=eval", f"ckpt={best}", "solver=euler",
                               "solver.step_size=0.5"), tmp_path / "euler")
    assert swapped["solver"]["name"] == "euler"
    assert swapped["trained_with"]["solver"]["name"] == "dopri5"
    assert swapped["metrics"]["test_nfe_per_batch"] == 2  # two Euler steps on [0, 1]
    assert swapped["metrics"]["test_mse"] != same["metrics"]["test_mse"]
    saved = json.loads((tmp_path / "euler" / "result.json").read_text())
    assert saved["metrics"] == swapped["metrics"]


def test_eval_mode_rejects_a_checkpoint_of_another_task(dummy_config, tmp_path) -> None:
    state = {"model": {}, "config": {"task": {"name": "cifar10"}}}
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="task=cifar10"):
        run(dummy_config("mode=eval", f"ckpt={tmp_path / 'other.pt'}"), tmp_path / "out")


def test_an_analysis_runs_once_instead_of_training(dummy_config, tmp_path, capsys) -> None:
    result = run(dummy_config("task.cls=dummy_task.DummyAnalysis", "solver=bosh3"), tmp_path)
    assert result["result"] == {"answer": 42, "solver": "bosh3"}
    assert (tmp_path / "analysis.txt").is_file() and not (tmp_path / "metrics.csv").exists()
    assert json.loads((tmp_path / "result.json").read_text())["result"]["answer"] == 42
    assert "result.answer  42" in capsys.readouterr().out


def test_smoke_trainer_caps_epochs_and_batches(dummy_config, tmp_path) -> None:
    result = run(dummy_config("trainer=smoke", "task.epochs=50"), tmp_path)
    assert result["epochs"] == 2 and result["final"]["epoch"] == 2
    assert result["final"]["nfe_forward"] > 0


def test_threads_setting_sets_torch_threads(dummy_config, tmp_path) -> None:
    threads = torch.get_num_threads()
    try:
        run(dummy_config("trainer=smoke", "trainer.threads=2"), tmp_path)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_ddp_true_without_torchrun_is_a_config_error(dummy_config, tmp_path) -> None:
    with pytest.raises(ConfigError, match="torchrun"):
        run(dummy_config("trainer=ddp", "trainer.device=cpu"), tmp_path)


def test_learning_rate_schedules() -> None:
    def factors(schedule, *args, **kwargs) -> list[float]:
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        scheduler = schedule(optimizer, *args, **kwargs)
        values = []
        for _ in range(4):
            values.append(optimizer.param_groups[0]["lr"] / 0.1)
            optimizer.step()
            scheduler.step()
        return values

    assert factors(multistep, [1, 3], gamma=0.1) == pytest.approx([1.0, 0.1, 0.1, 0.01])
    assert factors(exponential, 0.5, min_lr=0.02) == pytest.approx([1.0, 0.5, 0.25, 0.2])
    constant, per_step = build_scheduler(
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1), None)
    assert constant.get_last_lr() == [0.1] and not per_step
    _, per_step = build_scheduler(
        torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1),
        OmegaConf.create({"_target_": "aca.train.optim.exponential", "_partial_": True,
                          "gamma": 0.5, "interval": "step"}))
    assert per_step


@pytest.mark.parametrize(("overrides", "message"), [
    (("task.optimizer._target_=torch.optim.SGD", "+task.optimizer.betas=[0.9,0.9]"),
     "torch.optim.SGD takes no 'betas'"),
    (("+task.optimizer.momentum=0.9",), "torch.optim.Adam takes no 'momentum'"),
    (("task.optimizer._target_=torch.optim.Nope",), "cannot be imported"),
    (("task.optimizer._target_=aca.train.optim.multistep",), "is not a torch.optim.Optimizer"),
    (("task.optimizer._partial_=false",), "_partial_ must be true"),
    (("+task.scheduler.step_size=3",), "aca.train.optim.multistep takes no 'step_size'"),
    (("+task.scheduler.interval=batch",), "interval 'batch'; choose one of: epoch, step"),
    (("task.optimizer.weight_decay=-1",), "task.optimizer: Invalid weight_decay value: -1"),
])
def test_a_key_the_optimizer_or_schedule_would_ignore_is_an_error(dummy_config, overrides,
                                                                   message) -> None:
    """Every key of task.optimizer / task.scheduler must be an argument of its target:
    Adam given ``momentum`` (an SGD setting) is refused, not silently ignored."""
    cfg = dummy_config(*overrides)
    with pytest.raises(ConfigError, match=message):
        check_config(cfg)


def test_format_table_aligns_flattened_keys() -> None:
    rows = [{"solver": "rk4", "error": 0.5}, {"solver": "dopri5", "error": 1e-7}]
    table = format_table("title", {"final": {"loss": 0.123456789, "epoch": 3}, "rows": rows})
    lines = table.splitlines()
    assert lines[0] == "title" and set(lines[1]) == {"-"}
    assert lines[2:4] == ["final.loss   0.123457", "final.epoch  3"]
    assert lines[4:] == ["", "rows:", "solver  error", "rk4     0.5", "dopri5  1e-07"]


def test_wandb_mode_prefers_the_environment(monkeypatch) -> None:
    auto = OmegaConf.create({"mode": "auto"})
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode(auto) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert wandb_mode(auto) == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_mode(OmegaConf.create({"mode": "online"})) == "disabled"
    monkeypatch.setenv("WANDB_MODE", "sometimes")
    with pytest.raises(ConfigError, match="offline"):
        wandb_mode(auto)


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_wandb_offline_writes_a_run_dir_and_disabled_writes_none(dummy_config, tmp_path,
                                                                 monkeypatch, mode) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    result = run(dummy_config("logger=wandb", f"logger.mode={mode}", "task.epochs=1"), tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == (1 if mode == "offline" else 0)
    assert math.isfinite(result["final"]["train_loss"])
