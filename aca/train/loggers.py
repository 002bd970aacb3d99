"""Run records: metrics.csv and result.json (always), wandb (optional, rank 0),
and the plain-text table printed at the end of a run."""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from aca.errors import ConfigError

log = logging.getLogger(__name__)

WANDB_MODES = ("auto", "online", "offline", "disabled")


def write_metrics_csv(path: Path, history: list[dict[str, float]]) -> None:
    """One row per epoch; columns are the union over epochs (test metrics appear
    only on evaluated epochs), rewritten whole so a resumed run stays consistent."""
    columns: list[str] = []
    for row in history:
        columns += [key for key in row if key not in columns]
    with open(path, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def write_json(path: Path, content: dict[str, Any]) -> None:
    path.write_text(json.dumps(content, indent=2, default=str) + "\n")


def _flatten(content: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in content.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = str(value)
    return text if isinstance(value, str) or len(text) <= 60 else text[:57] + "..."


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(row, dict) for row in value)


def _format_rows(name: str, rows: list[dict[str, Any]]) -> list[str]:
    """A list of dicts as a column-aligned table headed by ``name``."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [columns] + [[_format_value(row.get(key, "")) for key in columns] for row in rows]
    widths = [max(len(str(line[i])) for line in cells) for i in range(len(columns))]
    return [f"{name}:"] + ["  ".join(f"{str(cell):<{width}}" for cell, width in
                                     zip(line, widths, strict=True)).rstrip() for line in cells]


def format_table(title: str, content: dict[str, Any]) -> str:
    """``content`` as aligned ``key  value`` lines (nested dicts flattened to dotted keys),
    lists of dicts (rows of a result table) as column-aligned tables after them."""
    flat = _flatten(content)
    scalars = {key: value for key, value in flat.items() if not _is_rows(value)}
    width = max((len(key) for key in scalars), default=0)
    lines = [title, "-" * max(len(title), width + 12)]
    lines += [f"{key:<{width}}  {_format_value(value)}" for key, value in scalars.items()]
    for key, value in flat.items():
        if _is_rows(value):
            lines += ["", *_format_rows(key, value)]
    return "\n".join(lines)


def wandb_mode(cfg: DictConfig) -> str:
    """``WANDB_MODE`` wins over ``logger.mode``; ``auto`` is online only with an API key,
    so a machine without credentials (or network) never waits for a login."""
    mode = os.environ.get("WANDB_MODE") or cfg.get("mode", "auto")
    if mode not in WANDB_MODES:
        raise ConfigError(f"unknown wandb mode {mode!r}; choose one of: {', '.join(WANDB_MODES)}")
    if mode == "auto":
        mode = "online" if os.environ.get("WANDB_API_KEY") else "offline"
    return mode


class WandbLogger:
    """wandb run of rank 0 with the resolved config; online init that cannot reach the
    server within ``init_timeout`` falls back to offline instead of blocking."""

    def __init__(self, cfg: DictConfig, out_dir: Path) -> None:
        import wandb

        logger_cfg = cfg.logger
        options = dict(project=logger_cfg.project, entity=logger_cfg.get("entity"),
                       group=logger_cfg.get("group"), tags=list(logger_cfg.get("tags") or []),
                       name=logger_cfg.get("run_name"), dir=str(logger_cfg.get("dir") or out_dir),
                       config=OmegaConf.to_container(cfg, resolve=True))

        def start(mode: str) -> Any:
            settings = wandb.Settings(mode=mode, init_timeout=logger_cfg.get("init_timeout", 30))
            wandb.setup(settings)  # process-wide: offline also keeps wandb's telemetry quiet
            return wandb.init(mode=mode, settings=settings, **options)

        mode = wandb_mode(logger_cfg)
        try:
            self.run = start(mode)
        except Exception as error:  # any failure to reach the server
            if mode != "online":
                raise
            log.warning("wandb online init failed (%s); logging offline instead", error)
            self.run = start("offline")

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self.run.log(metrics, step=step)

    def summary(self, result: dict[str, Any]) -> None:
        self.run.summary.update(_flatten(result.get("final", {})))

    def finish(self) -> None:
        self.run.finish()


class NullLogger:
    """``logger=none``, wandb disabled, and every rank but 0."""

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def summary(self, result: dict[str, Any]) -> None:
        pass

    def finish(self) -> None:
        pass


def make_logger(cfg: DictConfig, out_dir: Path, is_main: bool) -> WandbLogger | NullLogger:
    name = cfg.logger.get("name", "none")
    if name not in ("none", "wandb"):
        raise ConfigError(f"unknown logger {name!r}; choose one of: none, wandb")
    if name == "wandb" and is_main and wandb_mode(cfg.logger) != "disabled":
        return WandbLogger(cfg, out_dir)
    return NullLogger()  # disabled wandb is not started at all: no files, no threads
