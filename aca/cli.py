"""``aca-run``: the Hydra command line of aca.

    aca-run task=toy method=aca solver=dopri5 [key=value ...]

Bad input (an unknown method/solver/task, a misspelt key, a bad value, a missing
data directory) prints one ``error:`` line naming the value and the valid choices
and exits with status 2; ``HYDRA_FULL_ERROR=1`` shows the traceback instead. Only the
command line's own errors (Hydra's), aca's (``aca.errors.AcaError``: a failed solve,
a bad setting, missing data or extra) and a run folder Hydra cannot write are shown so:
any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from aca.errors import AcaError, ConfigError
from aca.train import distributed, run
from aca.train.config import RUN_SETTINGS, TRAINING_SETTINGS, is_bool, is_int, is_number

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
USAGE_EXIT_CODE = 2
INTERRUPTED_EXIT_CODE = 130  # the shell's code for Ctrl-C
_SHOW_TRACEBACK = False  # HYDRA_FULL_ERROR=1 as the user set it
HYDRA_PACKAGE = str(Path(hydra.__file__).parent)
# Hydra's functions that write the run (or sweep) folder before a job starts
HYDRA_WRITERS = {"run_job", "sweep", "launch", "_save_config", "configure_log"}
CHECKED_BY_TRAINER = {key for key, _, _ in RUN_SETTINGS + TRAINING_SETTINGS}


def config_dir() -> Path:
    """configs/ of the checkout this package runs from (experiments/ is reached through
    configs/experiment, a link to ../experiments)."""
    if not (CONFIG_DIR / "config.yaml").is_file():
        raise SystemExit(f"error: aca-run needs the repository's configs/ directory, expected at "
                         f"{CONFIG_DIR}; install from a checkout with `pip install -e .`")
    return CONFIG_DIR


def group_options(group: str) -> list[str]:
    """Config names of one group, e.g. the solvers of ``solver``."""
    folder = CONFIG_DIR / group
    return sorted(path.stem for path in folder.glob("*.yaml")) if folder.is_dir() else []


def _hydra_writing_run_dir(error: BaseException) -> bool:
    """Whether ``error`` is an OSError of Hydra's own writing of the run folder before the
    job starts (creating the run or sweep folder, its .hydra/ files, its log file): an
    unwritable ``hydra.run.dir``, or a file where a folder must be."""
    if not isinstance(error, OSError) or error.filename is None:
        return False
    codes = [frame.f_code for frame, _ in traceback.walk_tb(error.__traceback__)]
    hydra_codes = [code for code in codes if code.co_filename.startswith(HYDRA_PACKAGE)]
    return (not any(code is _job.__code__ for code in codes) and bool(hydra_codes)
            and hydra_codes[-1].co_name in HYDRA_WRITERS)


def describe_error(error: BaseException) -> str | None:
    """One line for an error caused by the user's input, None for a bug (whose
    traceback is worth seeing): Hydra's errors of the command line, aca's own
    (AcaError: ODEError, ConfigError, DataError, MissingExtraError), and an OSError on the
    run folder (unwritable, or a file where a folder must be)."""
    if isinstance(error, MissingConfigException):
        missing = re.search(r"Could not find '([^']+)/([^'/]+)'", str(error))
        if missing:
            group, name = missing.groups()
            choices = ", ".join(sorted(error.options or group_options(group))) or "(none)"
            return f"unknown {group.replace('/', '.')} {name!r}; choose one of: {choices}"
    if isinstance(error, ConfigCompositionException) and isinstance(
            error.__cause__, OmegaConfBaseException):
        cause = error.__cause__
        if "not in struct" in str(cause):
            parent = cause.parent_node
            valid = ", ".join(sorted(str(key) for key in parent)) if parent is not None else ""
            return f"unknown key {cause.full_key!r}; valid keys here: {valid}"
        return f"{error}: {cause}"
    if isinstance(error, (ConfigCompositionException, OverrideParseException, AcaError)):
        return str(error)
    if _hydra_writing_run_dir(error):
        return (f"cannot write the run folder: {error.strerror}: {error.filename}; choose "
                "another with hydra.run.dir=PATH (hydra.sweep.dir=PATH with -m)")
    # A launcher that runs the jobs in other processes (submitit) reports a failed job
    # with the job's stderr, which holds the job's own one-line error.
    job_error = re.search(r"^error: (.+)$", str(error), re.MULTILINE)
    return job_error.group(1) if job_error else None


def _kind(default: Any) -> tuple[Callable[[Any], bool], str, str] | None:
    """How a value replacing ``default`` is tested, and its description (singular,
    plural); None when anything may replace it (a string, null, a mapping)."""
    if isinstance(default, bool):
        return is_bool, "true or false", "true/false values"
    if isinstance(default, int):
        return is_int, "an integer", "integers"
    if isinstance(default, float):
        return is_number, "a number", "numbers"
    if isinstance(default, ListConfig):
        item = _kind(default[0]) if len(default) else None
        if item is None:
            return (lambda value: isinstance(value, ListConfig)), "a list [a,b,...]", "lists"
        return ((lambda value: isinstance(value, ListConfig) and all(map(item[0], value))),
                f"a list of {item[2]} [a,b,...]", "lists")
    return None


def _plain(value: Any) -> Any:
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, ListConfig) else value


def check_value_types(cfg: DictConfig) -> None:
    """Each ``key=value`` of the command line has the type of the value it replaces in the
    composed configs (a number for a number, true/false for a flag, a list for a list), so
    ``task.T_num=abc`` fails here naming its key, not inside a task. Null is always let
    through (several settings mean "all" or "off" by it), and the run settings the trainer
    checks itself (aca.train.config) are left to its more precise messages."""
    hydra_cfg = HydraConfig.get()
    overrides = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    groups = set(hydra_cfg.runtime.choices)
    values = [item for item in overrides if item.key_or_group not in groups
              and item.key_or_group not in CHECKED_BY_TRAINER and not item.is_delete()]
    if not values:
        return
    searchpath = [item for item in hydra_cfg.overrides.hydra if item.startswith("hydra.searchpath")]
    defaults = compose(config_name="config", overrides=[
        item.input_line for item in overrides if item.key_or_group in groups] + searchpath)
    for item in values:
        key = item.key_or_group
        default, value = OmegaConf.select(defaults, key), OmegaConf.select(cfg, key)
        kind = _kind(default)
        if kind is not None and value is not None and not kind[0](value):
            given = " is empty" if value == "" else f"={_plain(value)!r} is invalid"
            raise ConfigError(f"{key}{given}; expected {kind[1]} (the default is "
                              f"{_plain(default)!r})")


def _exit_with(message: str) -> None:
    one_line = " ".join(line.strip() for line in message.splitlines() if line.strip())
    print(f"error: {one_line}", file=sys.stderr)
    sys.exit(USAGE_EXIT_CODE)


def _job(cfg: DictConfig) -> None:
    out_dir = HydraConfig.get().runtime.output_dir
    try:
        check_value_types(cfg)
        run(cfg, out_dir)
    except KeyboardInterrupt:
        resume = (f"; the same command with hydra.run.dir={out_dir} resumes from its last.pt"
                  if (Path(out_dir) / "last.pt").is_file() else "")
        print(f"interrupted{resume}", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT_CODE)
    except Exception as error:
        # Exit here: past this point Hydra would print its own report of the job.
        message = None if _SHOW_TRACEBACK else describe_error(error)
        if message is None:
            raise
        _exit_with(message)


def main() -> None:
    """Entry point of ``aca-run``: Hydra's own flags (--help, --cfg job, --info, -m)
    work as usual; user errors become one line and exit status 2."""
    global _SHOW_TRACEBACK
    _SHOW_TRACEBACK = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let errors reach us instead of Hydra's printer
    app = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(_job)
    try:
        app()
        distributed.end_rank()
    except Exception as error:
        message = None if _SHOW_TRACEBACK else describe_error(error)
        if message is None:
            raise
        _exit_with(message)


if __name__ == "__main__":
    main()
