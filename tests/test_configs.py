"""Every config combination composes with Hydra's compose API, and the config groups
agree with the library (solver and gradient names, step sizes, task classes)."""

from __future__ import annotations

import pytest
import torch
from conftest import CONFIG_DIR, REPO_ROOT, compose_config
from hydra import compose, initialize_config_dir

import aca
from aca.task import Analysis, Task, ode_options
from aca.train.config import task_class
from aca.train.optim import build_optimizer, build_scheduler, check_recipe

METHODS = sorted(path.stem for path in (CONFIG_DIR / "method").glob("*.yaml"))
SOLVERS = sorted(path.stem for path in (CONFIG_DIR / "solver").glob("*.yaml"))
TASKS = sorted(path.stem for path in (CONFIG_DIR / "task").glob("*.yaml"))
EXPERIMENTS = sorted(path.stem for path in (REPO_ROOT / "experiments").glob("*.yaml"))
FIXED_STEP = {name for name, tableau in aca.SOLVERS.items() if not tableau.adaptive}


def test_groups_match_the_library() -> None:
    """Every registered solver (aliases included) is selectable as ``solver=NAME``."""
    assert set(METHODS) == set(aca.GRADIENTS)
    assert set(SOLVERS) == set(aca.SOLVERS)
    assert TASKS, "configs/task/ holds no task"


def _check_composes(task: str, method: str, solver: str) -> None:
    cfg = compose("config", overrides=[f"task={task}", f"method={method}", f"solver={solver}"])
    assert (cfg.method.name, cfg.solver.name) == (method, solver)
    assert cfg.task.name and cfg.task.cls  # an alias (hopper -> mujoco) keeps its target's name
    assert (cfg.solver.step_size is not None) == (solver in FIXED_STEP)
    assert cfg.solver.rtol > 0 and cfg.solver.atol > 0


@pytest.mark.parametrize("task", TASKS)
def test_every_method_and_every_solver_composes_with_task(task: str) -> None:
    """Each (task, method) and (task, solver) pair, in max(#methods, #solvers) composes."""
    pairs = max(len(METHODS), len(SOLVERS))
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for index in range(pairs):
            _check_composes(task, METHODS[index % len(METHODS)], SOLVERS[index % len(SOLVERS)])


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_full_method_solver_product_composes_with_task(task: str) -> None:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        for method in METHODS:
            for solver in SOLVERS:
                _check_composes(task, method, solver)


def _check_recipe(cfg) -> None:
    """A Task's config holds a recipe whose optimizer and schedule build (every key an
    argument of its target); an Analysis' holds none."""
    cls = task_class(cfg)
    assert issubclass(cls, (Task, Analysis))
    if issubclass(cls, Analysis):
        assert "optimizer" not in cfg.task
        return
    assert cfg.task.epochs > 0 and cfg.task.batch_size > 0
    check_recipe(cfg.task.optimizer, cfg.task.get("scheduler"))
    optimizer = build_optimizer([torch.zeros(1, requires_grad=True)], cfg.task.optimizer)
    assert optimizer.param_groups[0]["lr"] == cfg.task.optimizer.lr
    build_scheduler(optimizer, cfg.task.get("scheduler"))


@pytest.mark.parametrize("task", TASKS)
def test_task_config_names_a_task_class_with_a_recipe(task: str) -> None:
    _check_recipe(compose_config(f"task={task}"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_presets_are_found_on_the_search_path(experiment: str) -> None:
    cfg = compose_config(f"+experiment={experiment}")
    assert cfg.task.name in TASKS
    _check_recipe(cfg)


@pytest.mark.parametrize("experiment", ["cifar_paper", "cifar_methods", "cifar_seeds"])
def test_cifar_presets_are_shared_and_the_task_chooses_the_data_set(experiment: str) -> None:
    """One preset serves CIFAR-10 and CIFAR-100; task=cifar100 (its config built on
    cifar10's through defaults) keeps the preset's recipe and swaps the data set."""
    ten = compose_config(f"+experiment={experiment}")
    hundred = compose_config("task=cifar100", f"+experiment={experiment}")
    assert (ten.task.dataset, hundred.task.dataset) == ("cifar10", "cifar100")
    assert hundred.task.name == "cifar100" and hundred.task.width == 64
    different = {key for key in ten.task if ten.task[key] != hundred.task[key]}
    assert different == {"name", "dataset"}
    cpu = compose_config("task=cifar100")
    assert {key for key in cpu.task if cpu.task[key] != compose_config("task=cifar10").task[key]
            } == {"name", "dataset"}


@pytest.mark.parametrize("trainer", ["default", "ddp", "smoke"])
def test_trainer_and_logger_groups_compose(trainer: str) -> None:
    cfg = compose_config(f"trainer={trainer}", "logger=wandb")
    assert cfg.trainer.resume in (True, False)
    assert cfg.logger.name == "wandb" and cfg.logger.mode == "auto"


def test_task_may_choose_the_monitored_metric() -> None:
    assert compose_config("task=dummy").trainer.monitor == "test_mse"
    assert compose_config("task=dummy", "trainer.monitor=test_x").trainer.monitor == "test_x"


def test_solver_groups_state_the_library_s_defaults() -> None:
    """The solve options of a run come from aca.SolveOptions: the solver configs repeat
    its tolerances (so a task's default run solves as odeint does), and every key of the
    solver and method groups is an option of that name. Every registered solver (aliases
    included) composes as ``solver=NAME``."""
    defaults = aca.SolveOptions()
    for solver in aca.SOLVERS:
        cfg = compose_config(f"solver={solver}")
        assert (cfg.solver.rtol, cfg.solver.atol) == (defaults.rtol, defaults.atol)
        options = ode_options(cfg)
        assert aca.SolveOptions(**options).solver == solver
        assert set(options) == set(aca.SolveOptions.names())
    tuned = ode_options(compose_config("+solver.safety=0.8", "method.max_checkpoints=4"))
    assert (tuned["safety"], tuned["max_checkpoints"]) == (0.8, 4)
    with pytest.raises(aca.InvalidOptionError, match=r"unknown solve option.*'tol'.*rtol"):
        ode_options(compose_config("+solver.tol=0.1"))
