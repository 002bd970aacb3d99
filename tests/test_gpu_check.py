"""scripts/gpu_check.py cannot rot while no GPU is at hand: its dry run (every section on
the CPU at toy sizes) runs here into a temporary folder, and its host-sync counter is
checked. No timing assertions."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import script_module

from aca.report import paper, plan
from aca.report.records import stale_records

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    with script_module("gpu_check") as module:
        yield module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    out = tmp_path_factory.mktemp("gpu")
    result = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads((out / "gpu_check.json").read_text()), result.stdout, out


def sections(record: dict) -> dict[str, dict]:
    return {section["name"]: section for section in record["sections"]}


def test_every_section_runs_on_the_cpu(gpu_check, dry_run):
    record, stdout, out = dry_run
    assert list(sections(record)) == list(gpu_check.SECTIONS)
    assert record["dry_run"] and record["device_type"] == "cpu"
    assert record["device"].startswith("CPU") and record["provenance"]["code"]
    for section in record["sections"]:
        assert section["status"].startswith("ok"), section
        assert section["rows"], section["name"]
        assert f"{section['name']}: ok" in stdout
    markdown = (out / "gpu_check.md").read_text()
    assert all(f"## {name}\n" in markdown for name in gpu_check.SECTIONS)


def test_sections_measure_what_they_claim(gpu_check, dry_run):
    by_name = sections(dry_run[0])
    outcomes = {row["outcome"]: row["tests"] for row in by_name["tests"]["rows"]}
    assert outcomes["passed"] > 0 and "failed" not in outcomes
    bench_rows = [r for r in by_name["bench"]["rows"] if r["status"] == "ok"]
    assert {r["method"] for r in bench_rows} == {gpu_check.bench.METHOD_LABELS[m]
                                                 for m in gpu_check.bench.METHODS}
    for row in bench_rows:  # float32 at rtol 1e-3 on toy problems: a few percent at most
        assert row["nfe_forward"] > 0 and row["peak_mib"] > 0 and row["grad_rel_error"] < 0.1
    node18 = {r["model"]: r for r in by_name["node18"]["rows"]}
    for method in ("aca", "adjoint", "naive"):
        row = node18[f"NODE-18 ({method})"]
        assert row["paper_hours"] == paper.CIFAR_METHODS[method][1]
        assert row["hours_90_epochs"] > 0 and row["nfe_forward"] > 0
    assert node18["ResNet-18"]["nfe_forward"] == 0
    assert any(note.startswith("naive / aca training time: ours ") and "3.39" in note
               for note in by_name["node18"]["notes"])
    compiled = [r for r in by_name["amp_compile"]["rows"] if r["compile"] != "off"]
    assert compiled and all(r["status"] != gpu_check.SKIPPED for r in compiled)
    syncs = {(r["gradient"], r["solver"]): r for r in by_name["syncs"]["rows"]}
    assert len(syncs) == 9 and syncs["aca", "dopri5"]["syncs_forward"] > 0
    (ddp,) = by_name["ddp"]["rows"]
    assert ddp["backend"] == "gloo" and ddp["world_size"] == 2
    assert ddp["replica_divergence"] == 0.0


def test_its_record_is_declared_by_the_gpu_target(dry_run, tmp_path):
    """``reproduce.py run gpu --scale paper`` writes results/gpu/paper/gpu_check.json: a
    declared, stamped record (check and render see it)."""
    assert [step.shell() for step in plan.plan("gpu", "paper")] == [
        "python scripts/gpu_check.py --out results/gpu/paper"]
    path = tmp_path / "gpu" / "paper" / "gpu_check.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(dry_run[0]))
    stale, count = stale_records(tmp_path, dry_run[0]["provenance"]["code"])
    assert (stale, count) == ([], 1)
    stale, _ = stale_records(tmp_path, "other code")
    assert stale[0].rerun == "python scripts/reproduce.py run gpu --scale paper"


def test_host_syncs_are_counted_and_the_methods_restored(gpu_check):
    original = torch.Tensor.item
    with gpu_check.count_host_syncs(torch.device("cpu")) as counts:
        torch.ones(2).sum().item()
        bool(torch.tensor(True))
        torch.arange(3).tolist()
        float(torch.ones(()))
    assert counts == {"item": 1, "__bool__": 1, "tolist": 1, "__float__": 1,
                      "cuda_sync_warnings": 0}
    with gpu_check.count_host_syncs(torch.device("meta")) as elsewhere:
        torch.ones(2).sum().item()  # a tensor on another device than the one watched
    assert elsewhere == {"cuda_sync_warnings": 0}
    assert torch.Tensor.item is original


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_without_a_gpu_the_full_run_is_refused(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("error: no CUDA device; run with --dry-run")
    assert not list(tmp_path.iterdir())


def test_a_failed_torchrun_names_the_rank_s_own_error(gpu_check) -> None:
    report = "\n".join([
        "terminate called without an active exception",
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "=" * 20, "Root Cause (first observed failure):",
        "  traceback : Signal 6 (SIGABRT) received by PID 20163", "=" * 20])
    assert gpu_check.torchrun_cause(report) == "terminate called without an active exception"
    raised = "[rank1]: Traceback\n[rank1]: RuntimeError: out of memory\n" + "=" * 20
    assert gpu_check.torchrun_cause(raised) == "[rank1]: RuntimeError: out of memory"
    killed = "Root Cause\n  traceback : Signal 9 (SIGKILL) received by PID 7\n" + "=" * 20
    assert gpu_check.torchrun_cause(killed) == "traceback : Signal 9 (SIGKILL) received by PID 7"
