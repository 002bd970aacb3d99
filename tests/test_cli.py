"""``aca-run`` end to end: a training run's records, a sweep, Hydra's own flags, and
one clear line (exit status 2) for each kind of bad input. Three runs go through a
real subprocess; the rest call the same entry point in-process, which is much cheaper
than starting Python and torch again for every case."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from conftest import TEST_CONFIG_DIR, cli_command, cli_env, compose_config

import aca
from aca import cli
from aca.train import run
from aca.train.lock import LOCK_NAME, run_folder_lock

BAD_INPUT = {
    "unknown solver": (("solver=foo",), ["unknown solver 'foo'", "bosh3, dopri5"]),
    "unknown method": (("method=foo",), ["unknown method 'foo'", "aca, adjoint, naive"]),
    "unknown task": (("task=foo",), ["unknown task 'foo'", "toy"]),
    "unknown experiment": (("+experiment=foo",), ["unknown experiment 'foo'"]),
    "misspelt key": (("trainer.epoch=3",), ["unknown key 'trainer.epoch'", "eval_every"]),
    "negative tolerance": (("task=dummy", "solver.rtol=-1"), ["rtol", "-1"]),
    "unknown solver option": (("task=dummy", "+solver.tol=1"), ["'tol'", "rtol, atol"]),
    "fixed step without step size": (("task=dummy", "solver=euler", "solver.step_size=null"),
                                     ["euler", "step_size"]),
    "missing data directory": (("task=dummy", "task.require_data_dir=true",
                                "data_dir=/nonexistent/aca-data"), ["/nonexistent/aca-data"]),
    "unknown mode": (("task=dummy", "mode=predict"), ["'predict'", "train, eval"]),
    "eval without checkpoint": (("task=dummy", "mode=eval"), ["ckpt=PATH"]),
    # values Hydra passes through as given, checked before any data is loaded
    "non-numeric tolerance": (("task=dummy", "solver.rtol=abc"), ["solver.rtol='abc'",
                                                                  "a number"]),
    "non-numeric seed": (("task=dummy", "seed=abc"), ["seed='abc'", "an integer"]),
    "negative seed": (("task=dummy", "seed=-1"), ["seed=-1", "2**32"]),
    "empty value": (("task=dummy", "solver.rtol="), ["solver.rtol is empty", "a number"]),
    "unknown device": (("task=dummy", "trainer.device=tpu"), ["'tpu'", "auto, cpu, cuda"]),
    "negative batch cap": (("task=dummy", "trainer.max_batches_per_epoch=-1"),
                           ["trainer.max_batches_per_epoch=-1", ">= 1"]),
    "zero epochs": (("task=dummy", "task.epochs=0"), ["task.epochs=0", ">= 1"]),
    "negative epochs": (("task=dummy", "task.epochs=-3"), ["task.epochs=-3", ">= 1"]),
    "fractional epochs": (("task=dummy", "task.epochs=2.5"), ["task.epochs=2.5", "integer"]),
    "evaluate every 0 epochs": (("task=dummy", "trainer.eval_every=0"),
                                ["trainer.eval_every=0", ">= 1"]),
    "zero batch size": (("task=dummy", "task.batch_size=0"), ["task.batch_size=0"]),
    "negative learning rate": (("task=dummy", "task.optimizer.lr=-0.1"),
                               ["task.optimizer.lr=-0.1", "positive"]),
    "zero threads": (("task=dummy", "trainer.threads=0"), ["trainer.threads=0", "auto"]),
    "flag as a word": (("task=dummy", "trainer.checkpoint=maybe"),
                       ["trainer.checkpoint='maybe'", "true or false"]),
    "ddp as a word": (("task=dummy", "trainer.ddp=maybe"), ["'maybe'", "auto, true, false"]),
    "negative gradient clip": (("task=dummy", "trainer.grad_clip=-1"), ["grad_clip=-1"]),
    "text step size": (("task=dummy", "solver.step_size=abc"), ["solver.step_size='abc'"]),
    "text checkpoint limit": (("task=dummy", "method.max_checkpoints=abc"),
                              ["method.max_checkpoints='abc'"]),
    "task setting of the wrong type": (("task=dummy", "task.dim=abc"),
                                       ["task.dim='abc'", "an integer (the default is 4)"]),
    "list setting given a word": (("task=toy", "task.methods=aca"),
                                  ["task.methods='aca'", "a list"]),
    "list of the wrong items": (("task=toy", "task.tolerances=[abc]"),
                                ["task.tolerances=['abc']", "a list of numbers"]),
    "sweep without -m": (("task=dummy", "method=aca,naive"), ["--multirun"]),
    "missing checkpoint": (("task=dummy", "ckpt=/nonexistent/last.pt"),
                           ["checkpoint not found", "/nonexistent/last.pt"]),
    # checkpoints that are not one, or not this model's ({files}: the checkpoints fixture)
    "checkpoint directory": (("task=dummy", "ckpt={files}"), ["is a directory", "last.pt"]),
    "text-file checkpoint": (("task=dummy", "ckpt={files}/text.pt"),
                             ["text.pt is not a checkpoint written by aca-run"]),
    "random-bytes checkpoint": (("task=dummy", "ckpt={files}/random.pt"),
                                ["random.pt is not a checkpoint written by aca-run"]),
    "bare state dict": (("task=dummy", "ckpt={files}/bare.pt"), ["holds no model weights"]),
    "another task's checkpoint": (("task=vdp", "ckpt={files}/dummy/last.pt"),
                                  ["trained on task 'dummy'", "task=dummy"]),
    "another task's checkpoint to evaluate": (
        ("task=vdp", "mode=eval", "ckpt={files}/dummy/last.pt"), ["trained on task 'dummy'"]),
    "checkpoint of other model settings": (
        ("task=dummy", "task.dim=3", "ckpt={files}/dummy/last.pt"),
        ["does not fit this model", "it was trained with task.dim=4"]),
    "truncated checkpoint": (("task=dummy", "ckpt={files}/truncated.pt"),
                             ["truncated.pt is a damaged checkpoint", "truncated or corrupted"]),
    # settings a task refuses in its constructor, before any data is made
    "one observation time": (("task=vdp", "task.n_points=1"), ["task.n_points=1", ">= 2"]),
    "negative noise": (("task=vdp", "task.noise=-1"), ["task.noise=-1", ">= 0"]),
    "negative number of end times": (("task=toy", "task.T_num=-3"), ["task.T_num=-3", ">= 1"]),
    "end times reversed": (("task=toy", "task.T_min=5", "task.T_max=1"),
                           ["task.T_max=1", ">= task.T_min (5)"]),
    "tolerance of 1 or more": (("task=dummy", "solver.rtol=1e10"),
                               ["solver.rtol=10000000000.0", "[0, 1)"]),
    "monitor that is not a metric": (("task=dummy", "trainer.monitor=test_acc"),
                                     ["trainer.monitor='test_acc'", "test_mse, test_nfe"]),
    "run folder below a file": (("task=dummy", "hydra.run.dir={files}/text.pt/run"),
                                ["cannot write the run folder", "text.pt/run",
                                 "hydra.run.dir=PATH"]),
}
SUBPROCESS_RUNS = {"train": ("task=dummy",), "unknown solver": BAD_INPUT["unknown solver"][0]}


def _subprocess(cwd: Path, args: tuple[str, ...]) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), cwd=cwd, env=cli_env(), capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory) -> dict[str, tuple[Path, subprocess.CompletedProcess]]:
    """``python -m aca.cli`` from a scratch working directory, two at a time."""
    cwds = {name: tmp_path_factory.mktemp(name.replace(" ", "_")) for name in SUBPROCESS_RUNS}
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(_subprocess, cwds[name], args)
                   for name, args in SUBPROCESS_RUNS.items()}
        return {name: (cwds[name], future.result()) for name, future in futures.items()}


@pytest.fixture
def aca_main(tmp_path, monkeypatch, capsys) -> Callable[..., tuple[int, str, str]]:
    """Call ``aca.cli.main`` in-process in ``tmp_path``: (exit status, stdout, stderr)."""
    monkeypatch.chdir(tmp_path)

    def invoke(*args: str, full_error: str = "0") -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["aca-run", *args,
                                          f"hydra.searchpath=[file://{TEST_CONFIG_DIR}]"])
        monkeypatch.setenv("HYDRA_FULL_ERROR", full_error)  # main() sets it to 1 for its own use
        try:
            cli.main()
            status = 0
        except SystemExit as exit_:
            status = exit_.code
        out, err = capsys.readouterr()
        return status, out, err
    return invoke


def _assert_one_error_line(status: int, stderr: str, expected: list[str]) -> None:
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for text in expected:
        assert text in lines[0]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> Path:
    """A folder of would-be checkpoints: text, random bytes, a bare state dict, and a real
    dummy-task run's ``dummy/last.pt``."""
    folder = tmp_path_factory.mktemp("checkpoints")
    (folder / "text.pt").write_text("not a checkpoint\n")
    (folder / "random.pt").write_bytes(random.Random(0).randbytes(4096))
    torch.save(torch.nn.Linear(2, 2).state_dict(), folder / "bare.pt")
    run(compose_config("task=dummy", "trainer=smoke", "trainer.checkpoint=true"),
        folder / "dummy")
    # cut inside the archive, where torch reports "OSError: [Errno 22] Invalid argument"
    (folder / "truncated.pt").write_bytes((folder / "dummy" / "last.pt").read_bytes()[:5000])
    return folder


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_line_without_traceback(aca_main, checkpoints, case) -> None:
    args, expected = BAD_INPUT[case]
    status, _, stderr = aca_main(*(arg.format(files=checkpoints) for arg in args))
    _assert_one_error_line(status, stderr, expected)


def test_a_solve_that_fails_at_run_time_is_one_line(aca_main) -> None:
    """An aca.ODEError raised while training (here a step-size underflow, a RuntimeError and
    not a ValueError) is the user's problem to fix: one line, exit status 2."""
    status, _, stderr = aca_main("task=dummy", "task.blow_up=true")
    _assert_one_error_line(status, stderr, ["step size", "underflowed at t=", "loosen rtol/atol"])


def test_bad_input_from_a_real_process(real_runs) -> None:
    _, done = real_runs["unknown solver"]
    _assert_one_error_line(done.returncode, done.stderr, BAD_INPUT["unknown solver"][1])


def test_hydra_full_error_lets_the_exception_through(aca_main) -> None:
    with pytest.raises(aca.InvalidOptionError, match="safety"):
        aca_main("task=dummy", "+solver.safety=2", full_error="1")


def test_checkpoint_mismatch_names_model_settings_not_the_recipe(aca_main, checkpoints) -> None:
    """task.epochs may change on resume, so it is no reason for a checkpoint not to fit."""
    status, _, stderr = aca_main("task=dummy", "task.dim=3", "task.epochs=5",
                                 f"ckpt={checkpoints}/dummy/last.pt")
    _assert_one_error_line(status, stderr, ["it was trained with task.dim=4"])
    assert "task.epochs" not in stderr


def test_amp_on_a_cpu_is_off_with_a_one_line_notice(aca_main) -> None:
    status, out, err = aca_main("task=dummy", "trainer=smoke", "trainer.amp=true")
    assert status == 0, err
    notices = [line for line in (out + err).splitlines() if "trainer.amp" in line]
    assert len(notices) == 1 and "is off on cpu" in notices[0], out + err


def test_a_second_run_in_a_busy_run_folder_is_refused(aca_main, tmp_path) -> None:
    """While a run holds its folder's lock, another run there is refused, naming the folder
    and the holder; the folder's records are left alone."""
    folder = tmp_path / "run"
    folder.mkdir()
    with run_folder_lock(folder):
        status, _, stderr = aca_main("task=dummy", f"hydra.run.dir={folder}")
        _assert_one_error_line(status, stderr, [f"run folder {folder} is in use",
                                                f"pid {os.getpid()}"])
        assert not (folder / "config.yaml").exists() and not (folder / "result.json").exists()
    assert aca_main("task=dummy", "task.epochs=1", f"hydra.run.dir={folder}")[0] == 0


def test_a_run_killed_with_sigkill_leaves_no_lock_behind(aca_main, tmp_path) -> None:
    """A process killed while it holds the lock (kill -9: no clean-up runs) does not block
    the run that resumes in its folder."""
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from aca.train.lock import run_folder_lock\n"
         "with run_folder_lock(Path(sys.argv[1])):\n print('held', flush=True); time.sleep(300)",
         str(folder)], stdout=subprocess.PIPE, text=True, env=cli_env())
    assert holder.stdout.readline().strip() == "held"
    holder.kill()  # SIGKILL
    holder.wait()
    assert (folder / LOCK_NAME).is_file()  # left behind, as kill -9 leaves it
    status, _, stderr = aca_main("task=dummy", "task.epochs=1", f"hydra.run.dir={folder}")
    assert status == 0, stderr
    assert (folder / "result.json").is_file() and not (folder / LOCK_NAME).exists()


def test_cfg_job_prints_the_composed_config_with_overrides(aca_main, tmp_path) -> None:
    status, out, _ = aca_main("--cfg", "job", "task=dummy", "solver=rk4", "seed=7")
    printed = yaml.safe_load(out)
    assert status == 0 and printed["solver"]["name"] == "rk4" and printed["seed"] == 7
    assert printed["task"]["name"] == "dummy" and "hydra" not in printed
    assert not list(tmp_path.iterdir()), "--cfg job must not start a run"


def test_training_run_writes_its_records_in_the_hydra_run_dir(real_runs) -> None:
    cwd, done = real_runs["train"]
    assert done.returncode == 0, done.stderr
    [run_dir] = (cwd / "outputs" / "dummy" / "aca-dopri5").iterdir()
    for name in (".hydra/config.yaml", "config.yaml", "metrics.csv", "result.json", "last.pt",
                 "best.pt"):
        assert (run_dir / name).is_file(), name
    result = json.loads((run_dir / "result.json").read_text())
    assert result["command"].startswith("python -m aca.cli task=dummy")
    assert result["final"]["epoch"] == 3
    assert "final.test_mse" in done.stdout and "dummy | train | method=aca" in done.stdout


def test_a_solver_once_missing_from_the_command_line_runs(aca_main, tmp_path) -> None:
    """``solver=dopri5_classic``, listed by the README, was refused as unknown."""
    status, _, stderr = aca_main("task=dummy", "solver=dopri5_classic", "task.epochs=1",
                                 "hydra.run.dir=run")
    assert status == 0, stderr
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["solver"]["name"] == "dopri5_classic"


def test_sweep_runs_every_job_in_the_multirun_dir(aca_main, tmp_path) -> None:
    status, _, stderr = aca_main("-m", "task=dummy", "method=aca,naive", "task.epochs=1",
                                 "hydra.sweep.dir=sweep")
    assert status == 0, stderr
    for job, method in (("0_aca-dopri5-seed0", "aca"), ("1_naive-dopri5-seed0", "naive")):
        result = json.loads((tmp_path / "sweep" / job / "result.json").read_text())
        assert result["method"] == method


def test_help_and_info_are_hydra_s(aca_main) -> None:
    status, out, _ = aca_main("--help")
    assert status == 0 and out.startswith("aca-run:")
    assert "solver: adaptive_heun, bosh3, dopri5" in out and "experiment:" in out
    status, out, _ = aca_main("--info", "searchpath")
    assert status == 0 and "Config search path" in out and str(cli.CONFIG_DIR) in out


def test_submitit_sweep_runs_each_job_in_its_own_process(aca_main, tmp_path, monkeypatch) -> None:
    """hydra/launcher=submitit_local: submitit's local executor, the code path of
    submitit_slurm up to the scheduler (each job pickled, run by another Python, its
    result read back)."""
    monkeypatch.setenv("PYTHONPATH", cli_env()["PYTHONPATH"])  # the jobs import the dummy task
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    status, _, stderr = aca_main("-m", "hydra/launcher=submitit_local", "task=dummy",
                                 "method=aca,naive", "trainer=smoke", "hydra.sweep.dir=sweep")
    assert status == 0, stderr
    for job, method in (("0_aca-dopri5-seed0", "aca"), ("1_naive-dopri5-seed0", "naive")):
        result = json.loads((tmp_path / "sweep" / job / "result.json").read_text())
        assert result["method"] == method and result["final"]["epoch"] == 2
    logs = list((tmp_path / "sweep" / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2  # two submitted jobs, each with its own process log


def test_a_job_error_reported_by_a_launcher_is_its_one_line() -> None:
    failed = RuntimeError("Job 9869 (task: 0) has not produced any output\nError stream "
                          "produced:\n----\nerror: solver.rtol='abc' is invalid; expected a "
                          "number\n")
    assert cli.describe_error(failed) == "solver.rtol='abc' is invalid; expected a number"
    assert cli.describe_error(RuntimeError("a bug")) is None


def test_ctrl_c_says_how_to_resume(aca_main, tmp_path, monkeypatch) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"")

    def interrupted(cfg, out_dir):
        raise KeyboardInterrupt
    monkeypatch.setattr(cli, "run", interrupted)
    status, _, stderr = aca_main("task=dummy", f"hydra.run.dir={tmp_path / 'run'}")
    assert status == 130
    assert stderr.strip() == (f"interrupted; the same command with hydra.run.dir="
                              f"{tmp_path / 'run'} resumes from its last.pt")


@pytest.mark.parametrize("bug", [ValueError("a bug in a task"), ImportError("a missing module"),
                                 FileNotFoundError("a path a task got wrong"), KeyError("key")])
def test_a_bug_keeps_its_traceback(aca_main, monkeypatch, bug) -> None:
    """Only aca's errors (and Hydra's) become one line: a ValueError, ImportError or
    FileNotFoundError from a bug reaches the user with its traceback."""
    def buggy(cfg, out_dir):
        raise bug
    monkeypatch.setattr(cli, "run", buggy)
    with pytest.raises(type(bug)):
        aca_main("task=dummy")
