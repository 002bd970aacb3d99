"""scripts/reproduce.py: the commands each target runs, and rendering from run records."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aca.errors import ConfigError
from aca.report import cli, drift, paper, plan, render
from aca.report.records import STALE_NOTE, check, current_code, find_records

SCRIPT = plan.REPO_ROOT / "scripts" / "reproduce.py"


CURRENT = {"commit": "c" * 40, "dirty": False, "code": current_code() or "none"}


def write_json(path: Path, payload: dict, stamp: dict | None = CURRENT) -> None:
    """A record, stamped as made by the current code unless ``stamp`` says otherwise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload if stamp is None else {**payload, "provenance": stamp}))


def toy_row(method: str, error: float) -> dict:
    return {"method": method, "abs_err_z0": error, "abs_err_alpha": 10 * error,
            "nfe_forward": 32, "nfe_backward": 30, "T": 19.5, "solver": "dopri5", "rtol": 1e-3,
            "atol": 1e-6}


@pytest.fixture
def records(tmp_path: Path) -> Path:
    """A results folder with a full toy record, a toy decay record missing 'naive' (partial),
    a digits methods run lacking its test accuracy (partial), two digits seed runs, and
    nothing else (missing). All are stamped with the current code."""
    root = tmp_path / "results"
    write_json(root / "toy/toy.json", {"alpha": 0.2, "at_T_report": [
        toy_row("aca", 0.125), toy_row("adjoint", 0.25), toy_row("naive", 0.5)]})
    write_json(root / "toy/decay/toy.json", {"alpha": -0.2, "at_T_report": [
        toy_row("aca", 0.125), toy_row("adjoint", 0.25)]})
    write_json(root / "digits/runs/methods/node18-aca/result.json",
               {"method": "aca", "final": {"test_acc": 0.975}, "wall_time_s": 12.5})
    write_json(root / "digits/runs/methods/node18-adjoint/result.json",
               {"method": "adjoint", "final": {"train_loss": 0.1}, "wall_time_s": 20.0})
    for seed, (accuracy, seconds) in enumerate(((0.9, 10.0), (0.8, 20.0))):
        write_json(root / f"digits/runs/methods/node18-naive-seed{seed}/result.json",
                   {"method": "naive", "final": {"test_acc": accuracy}, "wall_time_s": seconds})
    for seed, accuracy in enumerate((0.9, 0.8, 0.95)):
        write_json(root / f"digits/runs/seeds/node18-seed{seed}/result.json",
                   {"final": {"test_acc": accuracy}})
    (root / "toy/COMMAND.txt").write_text("aca-run +experiment=toy\n")
    return root


def table_rows(markdown: str, title_start: str) -> list[list[str]]:
    """The body rows of the Markdown table under the heading that starts with title_start."""
    section = markdown.split(f"### {title_start}", 1)[1].split("\n### ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]


def test_render_fills_ours_beside_the_papers_and_marks_missing(records: Path) -> None:
    problems = render.render(records)
    tables = (records / "paper_tables.md").read_text()

    toy = table_rows(tables, "Toy")
    assert toy[0] == ["0.2", "19.5", "dopri5", "0.001", "1.000e-06", "aca", "0.125", "1.25", "32",
                      "30", "≈0.48"]
    assert toy[2][5:8] == ["naive", "0.5", "5"] and toy[2][-1] == "≈0.96"
    assert toy[5][:1] + toy[5][5:8] == ["-0.2", "naive", "missing", "missing"]  # partial record

    digits = table_rows(tables, "Digits (8x8): NODE-18 trained")
    assert digits[0][1:5] == ["NODE-18 (aca)", "1", "97.5", "12.5"] and digits[0][5] == "≈92.65"
    assert digits[1][1:5] == ["NODE-18 (adjoint)", "1", "missing", "20"]  # no test_acc
    assert digits[2][2:5] == ["2", "85 ± 7.071", "15 ± 7.071"]  # two seeds: mean ± std
    assert digits[3][2:4] == ["0", "missing"]  # no ResNet run at all
    seeds = table_rows(tables, "Digits (8x8): final test accuracy over seeds")
    assert seeds[0][1:6] == ["NODE-18", "3", "90", "80", "95"]  # median, min, max
    assert seeds[1][2:4] == ["0", "missing"]

    three_body = table_rows(tables, "Three-body")
    assert three_body[0][5] == "missing" and three_body[0][-1] == paper.masses()

    assert "results/toy/decay/toy.json is partial: no naive row at T_report" in problems
    assert "results/digits/runs/methods/node18-adjoint/result.json is partial: no final.test_acc" \
        in problems
    assert any(p.startswith("results/bench/bench.json is missing: run `python scripts/"
                            "reproduce.py run bench`") for p in problems)
    readme = (records / "README.md").read_text()
    assert "## Missing or partial records" in readme and problems[0] in readme
    assert "[toy/COMMAND.txt](toy/COMMAND.txt)" in readme
    assert "aca-run +experiment=toy hydra.run.dir=results/toy" in readme
    latex = (records / "paper_tables.tex").read_text()
    assert latex.count(r"\begin{tabular}") == tables.count("\n### ")
    assert r"$\approx$0.48" in latex and "NODE-18 (adjoint) & 1 & missing" in latex


def test_render_shows_a_failed_gradient_and_uncounted_work(records: Path) -> None:
    """Robertson's gradient table: a failed method says so with its error; a forward solve
    that failed has no counted work (–), not zeros; the learning runs fill their rows."""
    rows = [{"solver": "kvaerno5", "rtol": 1e-5, "method": "aca", "grad_rel_error": 8.5e-4,
             "steps": 36, "jacobians": 296, "time_s": 1.4, "error": ""},
            {"solver": "kvaerno5", "rtol": 1e-5, "method": "adjoint", "grad_rel_error": None,
             "steps": 36, "jacobians": 1044, "time_s": 29.5,
             "error": "MaxStepsExceededError: adaptive solve took max_steps=1000 steps"},
            {"solver": "dopri5", "rtol": 1e-5, "method": "aca", "grad_rel_error": None,
             "steps": None, "jacobians": None, "time_s": 0.6,
             "error": "MaxStepsExceededError: adaptive solve took max_steps=1000 steps"}]
    write_json(records / "robertson/robertson_gradients.json", {"rows": rows})
    write_json(records / "robertson/runs/aca_kvaerno5_rtol1e-06.json",
               {"rates": [0.039, 3.1e7, 9.8e3], "k1_rel_error": 0.025, "k2_rel_error": 0.033,
                "k3_rel_error": 0.02, "final_test_mse": 1.2e-6, "total_time_s": 350.0})
    render.render(records)
    tables = (records / "paper_tables.md").read_text()
    gradients = table_rows(tables, "Robertson's stiff kinetics")
    assert gradients[0][:6] == ["kvaerno5", "1.000e-05", "aca", "8.500e-04", "36", "296"]
    assert gradients[1][3] == "failed" and gradients[1][7].startswith("MaxStepsExceededError")
    assert gradients[2][3:6] == ["failed", "–", "–"]
    learning = table_rows(tables, "Robertson: learning")
    assert learning[0][:4] == ["aca", "0.039", "3.100e+07", "9800"]
    assert learning[1][:2] == ["naive", "missing"]


needs_checkout = pytest.mark.skipif(current_code() is None,
                                    reason="needs the git checkout aca is imported from")


@needs_checkout
def test_render_marks_the_cells_of_stale_records(records: Path) -> None:
    write_json(records / "toy/decay/toy.json", {"alpha": -0.2, "at_T_report": [
        toy_row("aca", 0.125)]}, stamp={**CURRENT, "code": "0" * 40})
    write_json(records / "digits/runs/methods/node18-adjoint/result.json",
               {"final": {"test_acc": 0.5}, "wall_time_s": 20.0}, stamp=None)
    render.render(records)
    tables = (records / "paper_tables.md").read_text()
    toy = table_rows(tables, "Toy")
    assert toy[0][6:10] == ["0.125", "1.25", "32", "30"]  # current: unmarked
    assert toy[3][:1] + toy[3][6:10] == ["-0.2", "0.125 †", "1.25 †", "32 †", "30 †"]
    assert toy[3][1:6] == ["19.5", "dopri5", "0.001", "1.000e-06", "aca"]  # settings: unmarked
    assert toy[4][6] == "missing"
    digits = table_rows(tables, "Digits (8x8): NODE-18 trained")
    assert digits[0][3:5] == ["97.5", "12.5"] and digits[1][3:5] == ["50 †", "20 †"]
    assert tables.count(STALE_NOTE) == 2  # under the toy and digits tables only
    assert r"0.125 \dag{}" in (records / "paper_tables.tex").read_text()
    readme = (records / "README.md").read_text()
    assert "## Stale records" in readme
    assert "- 1 record(s) of `toy`: `python scripts/reproduce.py run toy`" in readme


@needs_checkout
def test_check_lists_stale_and_unstamped_records(records: Path, capsys) -> None:
    old = {**CURRENT, "commit": "0" * 40, "code": "0" * 40}
    write_json(records / "toy/decay/toy.json", {"alpha": -0.2}, stamp=old)
    write_json(records / "three_body/paper/runs/physics_aca.json", {"m1": 1.1}, stamp=None)
    write_json(records / "bench/bench.json", {"rows": []}, stamp={**CURRENT, "code": "unknown"})
    table = records / "sines" / "table.csv"
    table.parent.mkdir(parents=True)
    code = CURRENT["code"]
    table.write_text(f"model,test_mse,commit,dirty,code\nlatent_ode,0.1,c,False,{code}\n"
                     f"ode_rnn,0.2,c,True,{'1' * 40}\n")
    (records / "toy/toy_error_vs_T.csv").write_text("T\n1\n")  # a companion, not a record
    assert check(records) == 0
    out = capsys.readouterr().out.splitlines()
    stale = sorted(line for line in out if line.startswith("stale"))
    assert stale == [
        f"stale  {records}/bench/bench.json: made outside a git checkout: its code is unknown",
        f"stale  {records}/sines/table.csv: made by c+changes, code 1111111111 (1 of 2 rows)",
        f"stale  {records}/three_body/paper/runs/physics_aca.json: no provenance stamp (made "
        "before stamps existed)",
        f"stale  {records}/toy/decay/toy.json: made by 0000000000, code 0000000000"]
    assert f"4 of 12 records under {records} are stale, rerun them with the current code:" in out
    assert out[-4:] == ["  python scripts/reproduce.py run toy",
                        "  python scripts/reproduce.py run sines",
                        "  python scripts/reproduce.py run three_body --scale paper",
                        "  python scripts/reproduce.py run bench"]
    assert check(records, strict=True) == 1
    for path in records.rglob("*.json"):
        write_json(path, json.loads(path.read_text()) | {"provenance": CURRENT})
    table.write_text(f"model,test_mse,commit,dirty,code\nlatent_ode,0.1,c,False,{code}\n")
    assert check(records, strict=True) == 0
    assert "0 of 12 records" in capsys.readouterr().out


def test_every_committed_record_is_declared_by_a_target() -> None:
    """check and the drift test only see the records a target declares: every JSON file
    under results/ is one (tables and figures are rendered from them)."""
    root = plan.REPO_ROOT / "results"
    declared = {path for _, path in find_records(root)}
    undeclared = [str(path.relative_to(root)) for path in root.rglob("*.json")
                  if ".hydra" not in path.parts and path not in declared]
    assert not undeclared
    assert any(path.suffix == ".csv" for path in declared)


def test_differences_compare_numbers_to_a_relative_tolerance() -> None:
    committed = {"rows": [{"err": 1.0, "nfe": 52, "time_s": 0.1, "solver": "dopri5"}],
                 "provenance": {"code": "a"}, "inf": float("inf"), "text": "1e-3"}
    same = {"rows": [{"err": 1.0 + 5e-7, "nfe": 52, "time_s": 9.0, "solver": "dopri5"}],
            "provenance": {"code": "b"}, "inf": float("inf"), "text": "0.001"}
    assert drift.differences(committed, same, 1e-6) == []
    changed = {"rows": [{"err": 1.0 + 2e-6, "nfe": 53, "time_s": 0.1, "solver": "bosh3"}],
               "inf": 1.0, "text": "1e-3", "new": 1}
    assert drift.differences(committed, changed, 1e-6, "f") == [
        "f.rows[0].err: committed 1.0, now 1.000002", "f.rows[0].nfe: committed 52, now 53",
        "f.rows[0].solver: committed 'dopri5', now 'bosh3'", "f.inf: committed inf, now 1.0",
        "f.new: only in the new record"]
    assert drift.differences([1, 2], [1], 1e-6, "f") == ["f: 2 entries committed, 1 now"]


def test_render_of_an_unreadable_record_names_it(records: Path) -> None:
    (records / "toy/toy.json").write_text("{not json")
    problems = render.render(records)
    assert any(p.startswith("results/toy/toy.json is unreadable") for p in problems)
    assert table_rows((records / "paper_tables.md").read_text(), "Toy")[0][6] == "missing"


def test_readme_results_section_is_replaced_in_place() -> None:
    text = "# aca\n\n## Results\n\nold\n\n## Later\n\nkept\n"
    new = render.replace_section(text, "## Results\n\nnew table\n")
    assert new == "# aca\n\n## Results\n\nnew table\n\n## Later\n\nkept\n"


def test_dry_run_prints_the_aca_run_commands() -> None:
    result = subprocess.run([sys.executable, str(SCRIPT), "run", "three_body", "--scale", "paper",
                             "--dry-run"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "aca-run -m +experiment=three_body_paper hydra.sweep.dir=results/three_body/paper/runs",
        "python scripts/reproduce.py summarize three_body results/three_body/paper/runs --out "
        "results/three_body/paper"]
    smoke = [step.shell() for step in plan.plan("toy", "smoke")]
    assert smoke[0] == ("aca-run +experiment=toy hydra.run.dir=outputs/smoke/toy task.T_num=3 "
                        "'task.solvers=[dopri5]' 'task.tolerances=[1e-3]'")


def test_run_refuses_finished_runs_it_would_only_resume(tmp_path, monkeypatch) -> None:
    """A finished run's last.pt in a run folder would be resumed (nothing trained, the old
    result restamped): refused, or with --fresh deleted with its log; an interrupted run (no
    result.json yet) and the paper-scale records below a CPU-scale target are left alone."""
    runs = tmp_path / "digits" / "runs" / "methods"
    for name, finished in [("done", True), ("interrupted", False)]:
        (runs / name).mkdir(parents=True)
        (runs / name / "last.pt").write_bytes(b"")
        (runs / name / "aca-run.log").write_text("epoch 1/1\n")
        if finished:
            (runs / name / "result.json").write_text("{}")
    paper = tmp_path / "digits" / "paper" / "runs" / "done"
    paper.mkdir(parents=True)
    (paper / "last.pt").write_bytes(b"")
    (paper / "result.json").write_text("{}")
    monkeypatch.setattr(plan, "REPO_ROOT", Path("/"))
    monkeypatch.setattr(plan, "plan", lambda *args: [])
    with pytest.raises(ConfigError, match=r"1 finished run\(s\) .*done/last.pt.*--fresh"):
        plan.run_target("digits", "cpu", str(tmp_path))
    assert plan.run_target("digits", "cpu", str(tmp_path), fresh=True) == 0
    assert not (runs / "done" / "last.pt").exists()
    assert not (runs / "done" / "aca-run.log").exists()  # not appended to, run after run
    assert (runs / "interrupted" / "last.pt").exists() and (paper / "last.pt").exists()
    assert (runs / "interrupted" / "aca-run.log").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "cifar11"], "error: unknown target 'cifar11'; choose one of: toy, vdp, cifar10"),
    (["run", "toy", "--scale", "huge"], "error: unknown scale 'huge'; choose one of: smoke, cpu, "
                                        "paper"),
    (["run", "digits", "--scale", "paper"], "error: target 'digits' has no 'paper' scale; "
                                            "choose one of: smoke, cpu"),
])
def test_bad_input_is_one_line_naming_the_choices(argv: list[str], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith(message) and error.count("\n") == 1


def test_every_target_plans_at_each_of_its_scales() -> None:
    for name, target in plan.TARGETS.items():
        for scale in target.scales:
            steps = plan.plan(name, scale, "ROOT")
            assert steps and all(step.argv[0] in ("aca-run", "python") for step in steps)
            assert any(f"ROOT/{target.folder}" in step.shell() for step in steps), (name, scale)
