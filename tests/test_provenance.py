"""Provenance stamps: the code hash follows the code (and only the code) of a checkout,
committed or not, and nothing fails outside a git checkout."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from aca import provenance
from aca.data import hopper
from aca.report.plan import TARGETS, plan
from aca.report.records import is_current

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t",
                    *args], check=True, capture_output=True)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git repository shaped like aca's: code, configs (with a link), reporting, docs."""
    root = tmp_path / "repo"
    for name, text in {"aca/__init__.py": "", "aca/solvers/step.py": "h = 1\n",
                       "aca/report/render.py": "tables\n", "experiments/toy.yaml": "a: 1\n",
                       "aca/report/summaries.py": "rows\n", "scripts/mutate.py": "m\n",
                       "scripts/bench_gradients.py": "rtol = 1e-3\n",
                       "README.md": "docs\n", ".gitignore": "__pycache__/\n"}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "configs").mkdir()
    os.symlink("../experiments", root / "configs" / "experiment")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "first")
    return root


@needs_git
def test_stamp_of_a_clean_checkout_names_its_commit(checkout: Path) -> None:
    stamp = provenance.make_stamp(provenance.repo_root(checkout / "aca"))
    assert re.fullmatch(r"[0-9a-f]{40}", stamp["commit"]) and stamp["dirty"] is False
    assert stamp["code"] == provenance.committed_code(checkout)
    assert stamp["torch"] == torch.__version__ and stamp["python"] and stamp["platform"]


@needs_git
def test_code_hash_follows_code_not_docs_reports_or_ignored_files(checkout: Path) -> None:
    clean = provenance.working_code(checkout)
    (checkout / "README.md").write_text("other docs\n")
    (checkout / "aca" / "report" / "render.py").write_text("tables drawn differently\n")
    (checkout / "aca" / "__pycache__").mkdir()
    (checkout / "aca" / "__pycache__" / "step.pyc").write_bytes(b"\0")
    assert provenance.working_code(checkout) == clean
    assert provenance.make_stamp(checkout)["dirty"] is False

    (checkout / "aca" / "solvers" / "step.py").write_text("h = 2\n")
    edited = provenance.working_code(checkout)
    assert edited != clean and provenance.make_stamp(checkout)["dirty"] is True
    git(checkout, "commit", "-q", "-am", "h = 2")  # the same files, now committed
    assert provenance.committed_code(checkout) == edited
    assert provenance.make_stamp(checkout)["dirty"] is False
    assert provenance.code_commits_since(checkout, "HEAD~1") == 1

    (checkout / "configs" / "new.yaml").write_text("b: 2\n")  # untracked code counts
    assert provenance.working_code(checkout) != edited
    (checkout / "configs" / "new.yaml").unlink()
    (checkout / "experiments" / "toy.yaml").write_text("a: 2\n")  # so do presets
    assert provenance.working_code(checkout) != edited


@needs_git
def test_an_installed_copy_inside_another_repository_has_no_commit(checkout: Path) -> None:
    site = checkout / ".venv" / "lib" / "site-packages" / "aca"
    site.mkdir(parents=True)
    assert provenance.repo_root(site) is None
    assert provenance.repo_root(checkout / "aca") == checkout


def test_outside_a_git_checkout_the_stamp_says_unknown(tmp_path: Path) -> None:
    (tmp_path / "aca").mkdir()
    assert provenance.repo_root(tmp_path / "aca") is None
    stamp = provenance.make_stamp(None)
    assert stamp["commit"] == stamp["dirty"] == stamp["code"] == provenance.UNKNOWN
    assert stamp["torch"] == torch.__version__
    assert provenance.short(stamp) == "unknown" and provenance.short(None) == "no stamp"
    assert "commit unknown (changes unknown" in provenance.describe(stamp)
    assert provenance.csv_cells(None) == [provenance.UNKNOWN] * 3


@needs_git
def test_this_checkout_is_stamped() -> None:
    root = provenance.repo_root()
    if root is None:
        pytest.skip("aca is not imported from a git checkout")
    stamp = provenance.stamp()
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    assert stamp["commit"] == head and re.fullmatch(r"[0-9a-f]{40}", stamp["code"])
    assert stamp["dirty"] in (True, False)


@needs_git
@pytest.mark.parametrize("edit", ["scripts/bench_gradients.py", "aca/report/summaries.py"])
def test_the_scripts_and_summaries_that_write_records_are_code(checkout: Path, edit: str) -> None:
    """A record is stale once the script that wrote it (the bench's default rtol 1e-3 ->
    1e-1), or the summary that tabulated it, changes; tools that write no record do not
    count."""
    stamp = provenance.make_stamp(checkout)
    (checkout / "scripts" / "mutate.py").write_text("another mutation\n")
    assert is_current(stamp, provenance.working_code(checkout))
    (checkout / edit).write_text("rtol = 1e-1\n")
    assert not is_current(stamp, provenance.working_code(checkout))
    git(checkout, "commit", "-q", "-am", "edited")
    assert provenance.code_commits_since(checkout, stamp["commit"]) == 1


def test_every_script_and_summary_of_the_plan_is_code() -> None:
    """Every command of every target runs code the stamp covers: its script, and for
    ``reproduce.py summarize`` the summaries and what they import from aca/report."""
    scripts = {step.argv[1] for name, target in TARGETS.items() for scale in target.scales
               for step in plan(name, scale) if step.argv[0] == "python"}
    assert scripts and all(provenance.is_code(path) for path in scripts), scripts
    modules = {f"aca/report/{name}.py" for name in ("summaries", "runs", "format", "paper",
                                                    "plan", "cli")}
    assert all(provenance.is_code(path) for path in modules)
    assert not provenance.is_code("aca/report/render.py")


def test_generated_data_is_in_the_stamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hopper loader notes the checksum of the data it returns, cached or not; a new
    run forgets the data of the last one."""
    data = torch.arange(6.0).reshape(1, 3, 2)
    monkeypatch.setattr(hopper, "generate_hopper", lambda *args: data)
    provenance.forget_data()
    assert provenance.data_stamp() == {}
    hopper.load_hopper(tmp_path, 1, n_steps=3)
    checksum = provenance.data_checksum(data)
    assert provenance.data_stamp() == {"data": {"hopper_n1_T3_seed123": checksum}}
    provenance.forget_data()
    hopper.load_hopper(tmp_path, 1, n_steps=3)  # from the cache
    assert provenance.data_stamp()["data"]["hopper_n1_T3_seed123"] == checksum
    assert provenance.data_cell(provenance.data_stamp()) == f"hopper_n1_T3_seed123={checksum}"
    assert checksum != provenance.data_checksum(data.double())
    provenance.forget_data()
