"""``aca-run``: the Hydra command line of aca.

    aca-run task=toy method=aca solver=dopri5 [key=value ...]

Bad input (an unknown method/solver/task, a misspelt key, a bad value, a missing
data directory) prints one ``error:`` line naming the value and the valid choices
and exits with status 2; ``HYDRA_FULL_ERROR=1`` shows the traceback instead.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

import aca
from aca.train import ConfigError, run

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"
USAGE_EXIT_CODE = 2
_SHOW_TRACEBACK = False  # HYDRA_FULL_ERROR=1 as the user set it


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


def describe_error(error: BaseException) -> str | None:
    """One line for an error caused by the user's input, None for a bug (whose
    traceback is worth seeing). Tasks and data code report bad settings with
    ValueError and missing optional extras with ImportError (naming the extra)."""
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
    if isinstance(error, (ConfigCompositionException, OverrideParseException,
                          OmegaConfBaseException, ConfigError, aca.ODEError, FileNotFoundError,
                          ValueError, ImportError)):
        return str(error)
    return None


def _exit_with(message: str) -> None:
    one_line = " ".join(line.strip() for line in message.splitlines() if line.strip())
    print(f"error: {one_line}", file=sys.stderr)
    sys.exit(USAGE_EXIT_CODE)


def _job(cfg: DictConfig) -> None:
    try:
        run(cfg, HydraConfig.get().runtime.output_dir)
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
    except Exception as error:
        message = None if _SHOW_TRACEBACK else describe_error(error)
        if message is None:
            raise
        _exit_with(message)


if __name__ == "__main__":
    main()
