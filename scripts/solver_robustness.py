"""Test-time solver swap: one trained checkpoint evaluated with many solvers,
tolerances and step sizes, without retraining (the paper's robustness table).

    python scripts/solver_robustness.py CKPT --out results/digits [KEY=VALUE ...]

Each row is the runner's own ``mode=eval`` (``aca-run task=<task> mode=eval
ckpt=CKPT solver=<name> solver.<key>=<value>``), composed with Hydra's compose
API and run in-process; the task settings (width, depth, data) are those stored
in the checkpoint. Trailing KEY=VALUE arguments override the run config (for
example ``data_dir=/data`` or ``trainer.device=cuda``). Writes
``solver_robustness.md`` and ``.csv`` into ``--out`` and the eval run records
under ``--runs``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from aca import provenance
from aca.report.format import markdown_table, write_csv
from aca.train import checkpoint, run

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

# (solver, overrides): adaptive solvers at several tolerances, fixed-grid ones at several h.
DEFAULT_SETTINGS = [
    ("heun_euler", "rtol=1e-2,atol=1e-2"),
    ("heun_euler", "rtol=1e-3,atol=1e-3"),
    ("bosh3", "rtol=1e-2,atol=1e-2"),
    ("bosh3", "rtol=1e-4,atol=1e-4"),
    ("dopri5", "rtol=1e-2,atol=1e-2"),
    ("dopri5", "rtol=1e-5,atol=1e-5"),
    ("euler", "step_size=1.0"),
    ("euler", "step_size=0.25"),
    ("euler", "step_size=0.1"),
    ("midpoint", "step_size=0.5"),
    ("midpoint", "step_size=0.25"),
    ("rk4", "step_size=0.5"),
    ("rk4", "step_size=0.25"),
]


def parse_setting(text: str) -> tuple[str, str]:
    """``name`` or ``name:key=value,key=value`` (keys of the solver config)."""
    name, _, options = text.partition(":")
    return name, options


def describe(solver: DictConfig) -> str:
    """The setting that matters: the step size on a fixed grid, else the tolerances."""
    if solver.step_size is not None:
        return f"step_size={solver.step_size}"
    return f"rtol={solver.rtol}, atol={solver.atol}"


def eval_config(ckpt: Path, trained: dict, solver: str, options: str,
                overrides: list[str]) -> DictConfig:
    """The config ``aca-run task=<task> mode=eval ckpt=CKPT solver=<solver> ...`` builds,
    with the task section of the trained run so the model matches its weights."""
    solver_overrides = [f"solver.{item}" for item in options.split(",") if item]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[
            f"task={trained['task']['name']}", "mode=eval", f"ckpt={ckpt}",
            f"method={trained['method']['name']}", f"solver={solver}", *solver_overrides,
            f"seed={trained['seed']}", f"data_dir={trained['data_dir']}", "trainer.progress=false"])
    cfg.task = OmegaConf.create(trained["task"])
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ckpt", type=Path, help="last.pt or best.pt of a training run")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE run-config overrides")
    parser.add_argument("--out", type=Path, required=True, help="folder for the table")
    parser.add_argument("--runs", type=Path, default=Path("outputs/solver_robustness"),
                        help="folder for the eval run records (default: %(default)s)")
    parser.add_argument("--solvers", nargs="+", default=None, metavar="NAME[:K=V,...]",
                        help="settings to test (default: a sweep of 13)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    trained = checkpoint.load(args.ckpt)["config"]
    settings = [parse_setting(s) for s in args.solvers] if args.solvers else DEFAULT_SETTINGS
    rows, stamps = [], []
    for index, (solver, options) in enumerate(settings):
        cfg = eval_config(args.ckpt, trained, solver, options, args.overrides)
        result = run(cfg, args.runs / f"{index:02d}-{solver}")
        metrics = result["metrics"]
        rows.append([solver, describe(cfg.solver), 100 * metrics["test_acc"], metrics["test_loss"],
                     metrics["test_nfe_per_batch"], metrics["test_time_s"]])
        stamps.append(provenance.csv_cells(result["provenance"]))
        print(" | ".join(str(cell) for cell in rows[-1]))
    headers = ["test solver", "setting", "test acc (%)", "test loss", "NFE / test batch",
               "test time (s)"]
    trained_solver = trained["solver"]
    title = (f"Checkpoint {args.ckpt} (task {trained['task']['name']}, "
             f"model {trained['task'].get('model', '?')}, trained with method "
             f"{trained['method']['name']}, solver {trained_solver['name']} "
             f"rtol={trained_solver['rtol']} atol={trained_solver['atol']} "
             f"step_size={trained_solver['step_size']})\n\n")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "solver_robustness.md").write_text(title + markdown_table(headers, rows))
    write_csv(args.out / "solver_robustness.csv", headers + list(provenance.CSV_FIELDS),
              [row + stamp for row, stamp in zip(rows, stamps)])
    print(args.out / "solver_robustness.md")


if __name__ == "__main__":
    main()
