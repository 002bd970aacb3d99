"""The shared trainer behind ``aca-run``: ``run(cfg, out_dir)`` trains, evaluates or
analyses one task as its config says, and writes the run records."""

from aca.errors import ConfigError
from aca.train.trainer import run

__all__ = ["ConfigError", "run"]
