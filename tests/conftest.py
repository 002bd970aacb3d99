"""Shared helpers: composing run configs (with the test-only dummy task from
tests/configs) and the command line and environment of an ``aca-run`` subprocess."""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

# One thread: the suite's tensors are small, and two threads on a busy 2-core
# machine made small convolutions up to 40x slower.
torch.set_num_threads(1)

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
CONFIG_DIR = REPO_ROOT / "configs"
TEST_CONFIG_DIR = TESTS_DIR / "configs"


def compose_config(*overrides: str) -> DictConfig:
    """The run config ``aca-run`` would build, with tests/configs on the search path
    (so ``task=dummy`` is available)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=[f"hydra.searchpath=[file://{TEST_CONFIG_DIR}]",
                                            *overrides])


@contextmanager
def script_module(name: str) -> Iterator[ModuleType]:
    """``scripts/<name>.py`` imported as the module ``name``, registered in sys.modules
    while in use (dataclasses look their module up there)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[name]


@pytest.fixture
def float64():
    """Run a test in float64 (``pytestmark = pytest.mark.usefixtures("float64")``); the
    default dtype is restored afterwards."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.fixture
def dummy_config() -> Callable[..., DictConfig]:
    """A quiet CPU config of the dummy task; extra overrides win."""
    def make(*overrides: str) -> DictConfig:
        return compose_config("task=dummy", "trainer.device=cpu", "trainer.progress=false",
                              *overrides)
    return make


def cli_command(*args: str, launcher: tuple[str, ...] = ()) -> list[str]:
    """``python [launcher] -m aca.cli`` with tests/configs on Hydra's search path."""
    return [sys.executable, *launcher, "-m", "aca.cli", *args,
            f"hydra.searchpath=[file://{TEST_CONFIG_DIR}]"]


def cli_env() -> dict[str, str]:
    """The environment of a CLI subprocess: the dummy task importable, one thread,
    Hydra's short error reports, no wandb mode forced from outside."""
    environment = {key: value for key, value in os.environ.items()
                   if key not in ("HYDRA_FULL_ERROR", "WANDB_MODE")}
    environment.update(PYTHONPATH=os.pathsep.join([str(TESTS_DIR), str(REPO_ROOT)]),
                       OMP_NUM_THREADS="1")
    return environment


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder every trainable task can read without a download: fake CIFAR-10/100
    pickles and ten random Hopper trajectories."""
    from test_cifar import write_fake_cifar10, write_fake_cifar100

    root = tmp_path_factory.mktemp("data")
    write_fake_cifar10(root)
    write_fake_cifar100(root)
    (root / "hopper").mkdir()
    trajectories = torch.rand(10, 200, 14, generator=torch.Generator().manual_seed(0))
    torch.save(trajectories, root / "hopper" / "hopper_n10_T200_seed123.pt")
    return root
