"""Resume after an interruption equals an uninterrupted run, for every trainable task: a
run killed inside its second epoch and started again in the same folder continues from
the first epoch's last.pt (weights, optimizer, schedule, RNG and the trainer's global
step) and ends with the same numbers as a run that was never stopped. Smoke scale: two
batches per epoch, a fixed-step solver."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_config

from aca.train import run, trainer
from aca.train.checkpoint import load

# Every trainable task of configs/task (cifar and mujoco on small fake data); sines with a
# KL schedule that changes every step, so its loss depends on the global step.
TASKS = {"dummy": ("task.dropout=0.5",), "vdp": (),
         "three_body": ("task.n_train=5", "task.n_test=5", "task.T_train=0.1", "task.T_test=0.2"),
         "sines": ("task.n_series=40", "task.kl_warmup_steps=1", "task.kl_decay=0.5"),
         "mujoco_cached": (), "digits": (), "cifar10_fake": (), "cifar100_fake": ()}
SMOKE = ("trainer=smoke", "trainer.max_epochs=null", "task.epochs=3", "trainer.checkpoint=true",
         "trainer.resume=true", "solver=rk4", "solver.step_size=0.5")


class Interrupted(Exception):
    """Stands for a killed process."""


def interrupt_in_second_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next run dies after the first training batch of its second epoch (or before it,
    when an epoch has one batch), as a killed process would: nothing of that epoch saved."""
    train_epoch = trainer.Trainer.train_epoch

    def dying(self: trainer.Trainer, epoch: int) -> dict[str, float]:
        if epoch == 1:
            loss, calls = self.task.loss, []

            def last_loss(*args: object) -> object:
                calls.append(1)
                if len(calls) > min(1, len(self._train_batches(epoch)) - 1):
                    raise Interrupted
                return loss(*args)
            self.task.loss = last_loss
        return train_epoch(self, epoch)

    monkeypatch.setattr(trainer.Trainer, "train_epoch", dying)


@pytest.mark.parametrize("task", TASKS)
def test_a_resumed_run_equals_an_uninterrupted_one(task: str, data_dir: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = compose_config(f"task={task}", *SMOKE, *TASKS[task], f"data_dir={data_dir}")
    whole = run(cfg, tmp_path / "whole")
    # the stamp carries the checksum of generated data (the cached Hopper file), and only
    # of this run's
    assert ("data" in whole["provenance"]) == (task == "mujoco_cached"), whole["provenance"]
    with monkeypatch.context() as patch:
        interrupt_in_second_epoch(patch)
        with pytest.raises(Interrupted):
            run(cfg, tmp_path / "split")
    saved = load(tmp_path / "split" / "last.pt")
    assert saved["epoch"] == 1 and saved["step"] == whole["final"]["step"] // 3
    resumed = run(cfg, tmp_path / "split")
    assert resumed["final"] == {**whole["final"], "time_s": resumed["final"]["time_s"],
                                "test_time_s": resumed["final"]["test_time_s"]}
    if task == "sines":  # the KL weight follows the global step across the resume
        assert 0 < whole["final"]["train_kl_weight"] < 1
