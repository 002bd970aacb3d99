"""The shared training loop: one for every task, whatever the gradient method.

A task (aca.task.Task) supplies data, model, loss and metrics; this module owns
seeding, devices, DDP, batching, optimizer and schedule, the global step, evaluation,
checkpoints, resume, NFE and wall-time accounting, and the run records. An analysis
(aca.task.Analysis) is run once instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler
from tqdm import tqdm

import aca
from aca import provenance
from aca.errors import ConfigError
from aca.provenance import run_summary
from aca.task import Analysis, Task, ode_options
from aca.train import checkpoint, distributed
from aca.train.config import (
    TRAINING_SETTINGS,
    build_task,
    check_config,
    check_ode_options,
    show_progress,
    task_class,
)
from aca.train.distributed import DistInfo
from aca.train.lock import run_folder_lock
from aca.train.loggers import (
    NullLogger,
    WandbLogger,
    format_table,
    make_logger,
    write_json,
    write_metrics_csv,
)
from aca.train.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)
# task settings of the training recipe, not of the model (task.epochs may change on resume)
RECIPE_KEYS = {key.split(".")[1] for key, _, _ in TRAINING_SETTINGS}
#: counters that only per-sample (sample_nfe_forward) or implicit (jacobians) solves make:
#: left out of the log line when zero (metrics.csv keeps every column)
ONLY_WHEN_COUNTED = ("sample_nfe_forward", "jacobians")


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; ``deterministic`` also selects deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic


def set_threads(setting: int | str) -> None:
    """``trainer.threads``: torch's intra-op threads in this process; ``auto`` keeps torch's
    default (OMP_NUM_THREADS, else one per physical core)."""
    if setting != "auto":
        torch.set_num_threads(int(setting))


def to_device(batch: Any, device: torch.device) -> Any:
    """Move every tensor of a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {key: to_device(value, device) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(value, device) for value in batch)
    return batch


def batch_length(batch: Any) -> int:
    """Number of examples in a batch: the leading size of its first tensor."""
    if isinstance(batch, torch.Tensor):
        return len(batch)
    values = batch.values() if isinstance(batch, dict) else batch
    for value in values:
        with contextlib.suppress(TypeError):
            return batch_length(value)
    raise TypeError(f"cannot find a tensor in a batch of type {type(batch).__name__}")


class Trainer:
    """Training and evaluation of one task on this process's device and rank."""

    def __init__(self, cfg: DictConfig, task: Task, out_dir: Path, info: DistInfo,
                 logger: WandbLogger | NullLogger | None = None) -> None:
        self.cfg, self.task, self.out_dir, self.info = cfg, task, out_dir, info
        self.settings = cfg.trainer
        self.device = info.device
        cap = self.settings.max_epochs
        self.epochs = min(int(cfg.task.epochs), cap) if cap else int(cfg.task.epochs)
        self.data = task.datasets()  # built once: trained and tested on, then reported on
        self.train_set, self.test_set = self.data
        if cfg.task.batch_size % info.world_size:
            hint = (f"; {cfg.task.name}'s training set has {len(self.train_set)} example(s), "
                    "so run it in one process" if len(self.train_set) < info.world_size
                    else f"; use a multiple of {info.world_size}")
            raise ConfigError(f"task.batch_size={cfg.task.batch_size} cannot be split evenly "
                              f"over {info.world_size} DDP processes{hint}")
        self.batch_size = cfg.task.batch_size // info.world_size
        self.model = task.model().to(self.device)
        self.train_model = distributed.wrap(self.model, info)
        if self.settings.compile:
            self.train_model = torch.compile(self.train_model)
        self.optimizer = build_optimizer(self.model.parameters(), cfg.task.optimizer)
        self.scheduler, self.step_scheduler_per_batch = build_scheduler(
            self.optimizer, cfg.task.get("scheduler"))
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.step = 0  # optimizer steps taken: the clock of schedules inside a task's loss
        self.best: float | None = None
        self.logger = logger or NullLogger()
        self.progress = info.is_main and show_progress(self.settings.progress)

    # -- data ---------------------------------------------------------------
    def _limit(self, batches: list) -> list:
        cap = self.settings.max_batches_per_epoch
        return batches[:cap] if cap else batches

    def _train_batches(self, epoch: int) -> list[list[int]]:
        """This rank's index batches for ``epoch``: a seeded shuffle that depends only on
        (seed, epoch), so a resumed run sees the same batches as an uninterrupted one."""
        sampler = DistributedSampler(self.train_set, num_replicas=self.info.world_size,
                                     rank=self.info.rank, shuffle=True, seed=self.cfg.seed)
        sampler.set_epoch(epoch)
        return self._limit(list(BatchSampler(sampler, self.batch_size, drop_last=False)))

    def _test_batches(self) -> list[list[int]]:
        """This rank's share of the full test set (no padding, so no example counts twice)."""
        indices = list(range(self.info.rank, len(self.test_set), self.info.world_size))
        return self._limit(list(BatchSampler(indices, self.cfg.task.batch_size, drop_last=False)))

    def _loader(self, dataset: Dataset, batches: list[list[int]]) -> DataLoader:
        # batch_size=None: the dataset returns a whole batch for a list of indices.
        return DataLoader(dataset, sampler=batches, batch_size=None,
                          num_workers=self.settings.num_workers,
                          pin_memory=self.device.type == "cuda")

    def _autocast(self) -> contextlib.AbstractContextManager:
        enabled = bool(self.settings.amp) and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    # -- one epoch ----------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """Train on every batch of ``epoch``; mean loss and metrics (over all ranks),
        solver statistics (this rank) and wall time."""
        self.train_model.train()
        batches = self._train_batches(epoch)
        sums: dict[str, float] = {}
        started = time.perf_counter()
        bar = tqdm(self._loader(self.train_set, batches), total=len(batches), leave=False,
                   desc=f"epoch {epoch + 1}/{self.epochs}", disable=not self.progress)
        with aca.track_stats() as stats:
            for batches_done, batch in enumerate(bar, start=1):
                batch = self.task.prepare_batch(to_device(batch, self.device), train=True)
                self.optimizer.zero_grad(set_to_none=True)
                with self._autocast():
                    loss, metrics = self.task.loss(self.train_model, batch, self.step)
                loss.backward()
                if self.settings.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
                self.optimizer.step()
                self.step += 1
                if self.step_scheduler_per_batch:
                    self.scheduler.step()
                count = batch_length(batch)
                for key, value in {"loss": float(loss.detach()), **metrics}.items():
                    sums[key] = sums.get(key, 0.0) + float(value) * count
                sums["count"] = sums.get("count", 0.0) + count
                bar.set_postfix(loss=f"{sums['loss'] / sums['count']:.4g}",
                                nfe=(stats.nfe_forward + stats.nfe_backward) // batches_done,
                                lr=f"{self.optimizer.param_groups[0]['lr']:.3g}")
        elapsed = time.perf_counter() - started
        sums = distributed.sum_across_ranks(sums, self.info)
        count = sums.pop("count")
        row = {f"train_{key}": value / count for key, value in sums.items()}
        row.update(stats.as_dict())
        row["nfe"] = stats.nfe_forward + stats.nfe_backward
        row["time_s"] = elapsed
        return row

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean test metrics over the full test set (each rank a share), the mean forward
        NFE per test batch and the wall time."""
        self.model.eval()
        sums: dict[str, float] = {"count": 0.0, "batches": 0.0}
        started = time.perf_counter()
        with aca.track_stats() as stats:
            for batch in self._loader(self.test_set, self._test_batches()):
                batch = self.task.prepare_batch(to_device(batch, self.device), train=False)
                with self._autocast():
                    metrics = self.task.evaluate(self.model, batch, self.step)
                count = batch_length(batch)
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + float(value) * count
                sums["count"] += count
                sums["batches"] += 1
        sums["nfe_forward"] = float(stats.nfe_forward)
        sums = distributed.sum_across_ranks(sums, self.info)
        count, batches, nfe = sums.pop("count"), sums.pop("batches"), sums.pop("nfe_forward")
        row = {f"test_{key}": value / max(count, 1.0) for key, value in sums.items()}
        row["test_nfe_per_batch"] = nfe / max(batches, 1.0)
        row["test_time_s"] = time.perf_counter() - started
        return row

    # -- checkpoints --------------------------------------------------------
    def save(self, name: str, epoch: int) -> None:
        checkpoint.save(self.out_dir / name, model=self.model.state_dict(),
                        optimizer=self.optimizer.state_dict(),
                        scheduler=self.scheduler.state_dict(), epoch=epoch, step=self.step,
                        best=self.best,
                        history=self.history, config=OmegaConf.to_container(self.cfg, resolve=True))

    def load_weights(self, path: str | Path) -> dict[str, Any]:
        """Read a checkpoint of this run's task and load its weights into the model; the
        checkpoint's content is returned. Another task's checkpoint, or one whose tensors do
        not fit (other task settings), is refused naming what to change."""
        state = checkpoint.load(path)
        trained = state.get("config") or {}
        trained_task = trained.get("task") or {}
        if trained_task.get("name") not in (None, self.cfg.task.name):
            raise ConfigError(f"checkpoint {path} was trained on task "
                              f"{trained_task['name']!r}; run with task={trained_task['name']}")
        expected = self.model.state_dict()
        saved = state["model"]
        misfits = sorted(set(expected) ^ set(saved)) + [
            key for key in expected if key in saved and saved[key].shape != expected[key].shape]
        if misfits:
            ours = OmegaConf.to_container(self.cfg.task, resolve=True)
            changed = [f"task.{key}={value!r}" for key, value in trained_task.items()
                       if key in ours and ours[key] != value and not isinstance(value, dict)
                       and key not in RECIPE_KEYS]
            hint = (f"it was trained with {', '.join(changed)}" if changed
                    else "it was trained with other model settings")
            raise ConfigError(f"checkpoint {path} does not fit this model ({len(misfits)} "
                              f"tensors missing or shaped differently, e.g. {misfits[0]!r}); "
                              f"{hint}")
        self.model.load_state_dict(saved)
        return state

    def resume(self, path: Path) -> None:
        """Continue from a checkpoint: weights, optimizer, schedule, epoch, global step,
        history, RNG. (A checkpoint older than the global step counts its epochs' batches.)"""
        state = self.load_weights(path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.start_epoch, self.best, self.history = state["epoch"], state["best"], state["history"]
        self.step = state.get("step", sum(len(self._train_batches(epoch))
                                          for epoch in range(self.start_epoch)))
        checkpoint.set_rng_state(state["rng"])
        log.info("resumed from %s at epoch %d", path, self.start_epoch)

    def resume_source(self) -> Path | None:
        """last.pt of this run dir (an interrupted run), else ``ckpt=``, else nothing."""
        last = self.out_dir / "last.pt"
        if self.settings.resume and last.is_file():
            return last
        return Path(self.cfg.ckpt) if self.cfg.ckpt else None

    def _improved(self, row: dict[str, Any]) -> bool:
        value = row.get(self.settings.monitor)
        if value is None:
            return False
        better = self.best is None or (value < self.best if self.settings.monitor_mode == "min"
                                       else value > self.best)
        if better:
            self.best = value
        return better

    def metric_columns(self) -> set[str]:
        """The columns of metrics.csv: the trainer's own, and ``train_``/``test_`` + the
        task's metrics as its loss and evaluate return them for one test batch (in eval
        mode, without gradients, the random state restored, so training is unchanged)."""
        columns = {"epoch", "lr", "step", "nfe", "time_s", "train_loss", "test_nfe_per_batch",
                   "test_time_s", *aca.SolveStats().as_dict()}
        batches = self._test_batches()[:1]
        if not batches:
            return columns
        state = checkpoint.rng_state()
        self.model.eval()
        with torch.no_grad(), self._autocast():
            batch = next(iter(self._loader(self.test_set, batches)))
            batch = self.task.prepare_batch(to_device(batch, self.device), train=False)
            _, train_metrics = self.task.loss(self.model, batch, self.step)
            test_metrics = self.task.evaluate(self.model, batch, self.step)
        checkpoint.set_rng_state(state)
        return columns | {f"train_{key}" for key in train_metrics} | {
            f"test_{key}" for key in test_metrics}

    def check_monitor(self) -> None:
        """``trainer.monitor`` must name a column of metrics.csv (it picks best.pt): a
        ConfigError naming the columns otherwise, before the first epoch."""
        columns = self.metric_columns()
        if self.settings.monitor not in columns:
            raise ConfigError(f"trainer.monitor={self.settings.monitor!r} is not a metric of "
                              f"task {self.cfg.task.name!r}; choose one of: "
                              f"{', '.join(sorted(columns))}")

    # -- the loop -----------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        self.check_monitor()
        source = self.resume_source()
        if source is not None:
            self.resume(source)
            if self.start_epoch >= self.epochs:  # its result would be restamped as this code's
                raise ConfigError(
                    f"{source} is a finished run (epoch {self.start_epoch} of {self.epochs}): "
                    "nothing left to train; raise task.epochs to go on, or use another out_dir")
        for epoch in range(self.start_epoch, self.epochs):
            row: dict[str, Any] = {"epoch": epoch + 1,
                                   "lr": self.optimizer.param_groups[0]["lr"]}
            row.update(self.train_epoch(epoch))
            row["step"] = self.step
            if not self.step_scheduler_per_batch:
                self.scheduler.step()
            last_epoch = epoch + 1 == self.epochs
            if last_epoch or (epoch + 1) % self.settings.eval_every == 0:
                row.update(self.evaluate())
            self.history.append(row)
            self.logger.log(row, step=epoch + 1)
            if self.info.is_main:
                log.info("epoch %d/%d  %s", epoch + 1, self.epochs, "  ".join(
                    f"{key}={value:.4g}" for key, value in row.items()
                    if key != "epoch" and not (key in ONLY_WHEN_COUNTED and value == 0)))
                write_metrics_csv(self.out_dir / "metrics.csv", self.history)
                improved = self._improved(row)
                if self.settings.checkpoint:
                    if improved:
                        self.save("best.pt", epoch + 1)
                    self.save("last.pt", epoch + 1)
        return self.result()

    def result(self) -> dict[str, Any]:
        result = run_summary(self.cfg)
        result.update(epochs=self.epochs, world_size=self.info.world_size,
                      final=self.history[-1] if self.history else {},
                      best={self.settings.monitor: self.best},
                      wall_time_s=sum(row.get("time_s", 0.0) for row in self.history),
                      nfe_total=sum(row.get("nfe", 0) for row in self.history))
        if self.info.enabled:
            result["ddp_replica_max_diff"] = distributed.replica_divergence(self.model, self.info)
        if self.info.is_main:
            result["report"] = self.task.report(self.model, self.data, self.history,
                                                self.out_dir)
        return result


def evaluate_checkpoint(cfg: DictConfig, task: Task, out_dir: Path,
                        info: DistInfo) -> dict[str, Any]:
    """``mode=eval``: the weights of ``ckpt`` evaluated on the test set with the solver
    and method of this run's config (a test-time solver swap, no retraining)."""
    trainer = Trainer(cfg, task, out_dir, info)
    state = trainer.load_weights(cfg.ckpt)
    trained = state.get("config") or {}
    result = run_summary(cfg)
    result.update(ckpt=str(cfg.ckpt), epoch=state.get("epoch"), metrics=trainer.evaluate(),
                  trained_with={"method": trained.get("method", {}).get("name"),
                                "solver": trained.get("solver")})
    return result


def _write_config(cfg: DictConfig, out_dir: Path) -> None:
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))


def _print_result(result: dict[str, Any]) -> None:
    mode = "analysis" if "result" in result else result["mode"]
    title = (f"{result['task']} | {mode} | method={result['method']} "
             f"solver={result['solver']['name']}")
    shown = {key: result[key] for key in ("final", "best", "metrics", "result", "wall_time_s",
                                          "nfe_total", "ckpt") if key in result}
    print(format_table(title, shown))


def run(cfg: DictConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run one config (train or eval a Task, or run an Analysis) writing into ``out_dir``:
    config.yaml (resolved), metrics.csv, result.json, checkpoints. Under torchrun it runs
    data-parallel and only rank 0 writes. A second run in a folder that a running one
    holds (aca.train.lock) is refused. Returns the result."""
    provenance.stamp()  # taken now, as the code was loaded, for every record of this process
    provenance.forget_data()  # the generated data of an earlier job of this process
    check_config(cfg, trainable=issubclass(task_class(cfg), Task))
    check_ode_options(ode_options(cfg))
    set_threads(cfg.trainer.threads)
    info = distributed.setup(cfg.trainer.ddp, cfg.trainer.device)
    if cfg.trainer.amp and info.device.type != "cuda" and info.is_main:
        log.warning("trainer.amp=true is off on %s: bfloat16 autocast runs on CUDA only",
                    info.device)
    out_dir = Path(distributed.broadcast_object(str(out_dir), info))
    with contextlib.ExitStack() as held:
        refused = None
        if info.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            try:
                held.enter_context(run_folder_lock(out_dir))
            except ConfigError as error:
                refused = error
        refused = distributed.broadcast_object(refused, info)
        if refused is not None:
            raise refused
        if info.is_main:
            _write_config(cfg, out_dir)
        return _run_task(cfg, out_dir, info)


def _run_task(cfg: DictConfig, out_dir: Path, info: DistInfo) -> dict[str, Any]:
    """The body of :func:`run`, once the run folder is this run's."""
    seed_everything(cfg.seed, cfg.trainer.deterministic)
    task = build_task(cfg)
    if isinstance(task, Analysis):
        result = run_summary(cfg)
        if info.is_main:
            result["result"] = task.analyze(out_dir)
    elif cfg.mode == "eval":
        result = evaluate_checkpoint(cfg, task, out_dir, info)
    else:
        logger = make_logger(cfg, out_dir, info.is_main)
        try:
            result = Trainer(cfg, task, out_dir, info, logger).fit()
            logger.summary(result)
        finally:
            logger.finish()
    result["out_dir"] = str(out_dir)
    if info.is_main:
        write_json(out_dir / "result.json", result)
        _print_result(result)
    return result
