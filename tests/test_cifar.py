"""CIFAR reader, augmentation, NODE-18/ResNet-18 and the cifar task, on tiny
fake CIFAR folders written here in the standard pickle format."""

from __future__ import annotations

import csv
import importlib.util
import os
import pickle
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config

import aca
from aca.data.cifar import (
    CIFAR_MEAN,
    CIFAR_SPECS,
    CIFAR_STD,
    CifarFormatError,
    download_cifar,
    load_cifar,
    md5sum,
    normalize,
    random_crop_flip,
)
from aca.errors import ConfigError, DataError
from aca.models.resnet import build_model, parameter_count
from aca.train import run
from aca.train.config import build_task

TRAIN_PER_BATCH = 6
TEST_SIZE = 8


def _dump(path: Path, content: dict) -> None:
    with open(path, "wb") as file:
        pickle.dump(content, file, protocol=2)


def _images(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_fake_cifar10(root: Path, seed: int = 0) -> Path:
    """``root/cifar-10-batches-py`` with 5 train batches, a test batch and meta."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for index in range(1, 6):
        labels = rng.integers(0, 10, TRAIN_PER_BATCH).tolist()
        content = {"batch_label": f"training batch {index} of 5", "labels": labels,
                   "data": _images(rng, TRAIN_PER_BATCH),
                   "filenames": [f"img_{index}_{i}.png" for i in range(TRAIN_PER_BATCH)]}
        _dump(folder / f"data_batch_{index}", content)
    _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1",
                                   "labels": rng.integers(0, 10, TEST_SIZE).tolist(),
                                   "data": _images(rng, TEST_SIZE)})
    _dump(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)],
                                     "num_cases_per_batch": TRAIN_PER_BATCH, "num_vis": 3072})
    return folder


def write_fake_cifar100(root: Path, seed: int = 0) -> Path:
    """``root/cifar-100-python`` with train, test and meta."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, size in (("train", 5 * TRAIN_PER_BATCH), ("test", TEST_SIZE)):
        _dump(folder / name, {"data": _images(rng, size),
                              "fine_labels": rng.integers(0, 100, size).tolist(),
                              "coarse_labels": rng.integers(0, 20, size).tolist()})
    _dump(folder / "meta", {"fine_label_names": [f"fine{i}" for i in range(100)],
                            "coarse_label_names": [f"coarse{i}" for i in range(20)]})
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small convolutions on a shared 2-core machine run ~40x faster on one thread
    than on two contended ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar10(root)
    write_fake_cifar100(root)
    return root


def test_load_cifar10_shapes_and_order(cifar_root: Path) -> None:
    data = load_cifar(cifar_root, "cifar10", verify=False)
    assert data.train_images.shape == (5 * TRAIN_PER_BATCH, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (TEST_SIZE, 3, 32, 32)
    assert data.train_labels.dtype == torch.int64
    assert data.class_names[3] == "class3"
    # Rows are CHW-ordered 3072-byte records: the first 1024 bytes are the red plane.
    with open(cifar_root / "cifar-10-batches-py" / "data_batch_2", "rb") as file:
        raw = pickle.load(file, encoding="latin1")
    image = data.train_images[TRAIN_PER_BATCH]  # first image of batch 2
    assert torch.equal(image[0].flatten(), torch.from_numpy(raw["data"][0, :1024]))
    assert torch.equal(image[2, 31], torch.from_numpy(raw["data"][0, -32:]))
    assert data.train_labels[TRAIN_PER_BATCH].item() == raw["labels"][0]


def test_load_cifar100_uses_fine_labels(cifar_root: Path) -> None:
    data = load_cifar(cifar_root, "cifar100", verify=False)
    with open(cifar_root / "cifar-100-python" / "train", "rb") as file:
        raw = pickle.load(file, encoding="latin1")
    assert data.train_labels.tolist() == raw["fine_labels"]
    assert data.train_images.shape == (5 * TRAIN_PER_BATCH, 3, 32, 32)
    assert len(data.class_names) == 100


def test_missing_folder_names_it_and_the_download_command(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        load_cifar(tmp_path, "cifar10")
    message = str(error.value)
    assert str(tmp_path / "cifar-10-batches-py") in message
    assert "scripts/download_cifar.py cifar10" in message


def test_unknown_dataset_lists_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cifar100"):
        load_cifar(tmp_path, "cifar11")


def test_checksum_mismatch_is_refused(cifar_root: Path) -> None:
    with pytest.raises(CifarFormatError, match="md5"):
        load_cifar(cifar_root, "cifar10", verify=True)


def test_md5sum_matches_hashlib_reference(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_bytes(b"abc")
    assert md5sum(path) == "900150983cd24fb0d6963f7d28e17f72"  # RFC 1321 test vector


def test_bad_label_range_and_shape_are_refused(tmp_path: Path) -> None:
    folder = write_fake_cifar10(tmp_path)
    rng = np.random.default_rng(1)
    _dump(folder / "data_batch_3", {"data": _images(rng, 2), "labels": [0, 10]})
    with pytest.raises(CifarFormatError, match=r"\[0, 9\]"):
        load_cifar(tmp_path, "cifar10", verify=False)
    _dump(folder / "data_batch_3", {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    with pytest.raises(CifarFormatError, match="3072"):
        load_cifar(tmp_path, "cifar10", verify=False)


def test_pickle_with_foreign_objects_is_refused(tmp_path: Path) -> None:
    folder = write_fake_cifar10(tmp_path)
    _dump(folder / "test_batch", {"data": Path("x"), "labels": []})
    with pytest.raises(CifarFormatError, match="unexpected object"):
        load_cifar(tmp_path, "cifar10", verify=False)


def _matching_windows(crop: torch.Tensor, padded: torch.Tensor) -> list[tuple[int, int, bool]]:
    """(dy, dx, flipped) of the 32x32 windows of ``padded`` equal to ``crop``."""
    matches = []
    for dy in range(9):
        for dx in range(9):
            window = padded[:, dy:dy + 32, dx:dx + 32]
            matches += [(dy, dx, False)] * torch.equal(crop, window)
            matches += [(dy, dx, True)] * torch.equal(crop, window.flip(2))
    return matches


def test_download_checks_the_archive_and_extracts(tmp_path: Path, monkeypatch) -> None:
    source = tmp_path / "source"
    write_fake_cifar10(source)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    spec = replace(CIFAR_SPECS["cifar10"], url=archive.as_uri(), archive_md5=md5sum(archive))
    monkeypatch.setitem(CIFAR_SPECS, "cifar10", spec)
    folder = download_cifar("cifar10", tmp_path / "data")
    assert folder == tmp_path / "data" / "cifar-10-batches-py"
    assert len(load_cifar(tmp_path / "data", "cifar10", verify=False).test_labels) == TEST_SIZE
    monkeypatch.setitem(CIFAR_SPECS, "cifar10", replace(spec, archive_md5="0" * 32))
    with pytest.raises(CifarFormatError, match="md5"):
        download_cifar("cifar10", tmp_path / "other")


def test_download_script_offline_prints_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    unreachable = replace(CIFAR_SPECS["cifar10"], url=(tmp_path / "offline.tar.gz").as_uri())
    monkeypatch.setitem(CIFAR_SPECS, "cifar10", unreachable)
    script = Path(__file__).resolve().parent.parent / "scripts" / "download_cifar.py"
    spec = importlib.util.spec_from_file_location("download_cifar", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["download_cifar.py", "cifar10", "--data-dir",
                                      str(tmp_path / "data")])
    with pytest.raises(SystemExit) as exit_:
        module.main()
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: cannot download file://") and "without internet, copy" in line
    assert not list((tmp_path / "data").iterdir())  # no partial archive left behind


def test_random_crop_flip_is_a_shifted_possibly_flipped_window() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=generator)
    out = random_crop_flip(images, padding=4, generator=generator)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    found = [_matching_windows(crop, source) for crop, source in zip(out, padded, strict=True)]
    assert all(len(matches) == 1 for matches in found)
    shifts = {(dy, dx) for ((dy, dx, _),) in found}
    flips = sum(flipped for ((_, _, flipped),) in found)
    assert len(shifts) > 20  # offsets spread over the 9x9 grid
    assert 10 < flips < 54  # about half flipped


def test_normalize_matches_paper_constants() -> None:
    images = torch.full((2, 3, 4, 4), 255, dtype=torch.uint8)
    out = normalize(images)
    assert out.dtype == torch.float32
    expected = [(1.0 - m) / s for m, s in zip(CIFAR_MEAN, CIFAR_STD, strict=True)]
    assert torch.allclose(out[0, :, 0, 0], torch.tensor(expected))


def test_full_width_parameter_counts_match_the_paper() -> None:
    node18 = build_model("node18", num_classes=10, ode_options={"solver": "heun_euler"})
    resnet18 = build_model("resnet18", num_classes=10)
    assert parameter_count(node18) == parameter_count(resnet18) == 11_173_962
    ode_blocks = [m for m in node18.modules() if isinstance(m, aca.ODEBlock)]
    assert len(ode_blocks) == 4
    assert all(block.t0 == 0.0 and block.t1 == 1.0 for block in ode_blocks)
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in node18.modules())


def test_unknown_model_lists_choices() -> None:
    with pytest.raises(ConfigError, match="resnet18"):
        build_model("resnet50")


def _cifar_config(root: Path, *overrides: str):
    """A narrow NODE-18 on the fake folder: 2 batches of 4 images per epoch."""
    return compose_config(
        "task=cifar10", f"data_dir={root}", "task.verify_checksums=false", "task.width=4",
        "task.batch_size=4", "task.epochs=1", "trainer=smoke", "solver=heun_euler",
        "solver.rtol=1e-2", "solver.atol=1e-2", *overrides)


def test_prepare_batch_augments_only_in_training(cifar_root: Path) -> None:
    task = build_task(_cifar_config(cifar_root))
    train, test = task.datasets()
    assert len(train) == 5 * TRAIN_PER_BATCH and len(test) == TEST_SIZE
    images, labels = train[[0, 1, 2]]
    assert images.dtype == torch.uint8
    plain, same_labels = task.prepare_batch((images, labels), train=False)
    assert torch.equal(plain, normalize(images)) and torch.equal(same_labels, labels)
    torch.manual_seed(0)
    augmented, _ = task.prepare_batch((images, labels), train=True)
    assert augmented.shape == (3, 3, 32, 32) and augmented.dtype == torch.float32
    assert not torch.equal(augmented, plain)


def test_cifar100_task_has_100_classes(cifar_root: Path) -> None:
    task = build_task(_cifar_config(cifar_root, "task=cifar100"))
    assert task.model()(torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    assert task.datasets()[0].tensors[1].max() < 100


@pytest.fixture(scope="module")
def trained(cifar_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """One 2-batch epoch of a width-4 NODE-18 per gradient method, with checkpoints."""
    out = tmp_path_factory.mktemp("runs")
    return {method: run(_cifar_config(cifar_root, f"method={method}", "trainer.checkpoint=true"),
                        out / method)
            for method in ("aca", "adjoint", "naive")}


@pytest.mark.parametrize("method", ["aca", "adjoint", "naive"])
def test_node18_trains_two_batches_with_each_method(trained: dict[str, dict], method: str) -> None:
    result = trained[method]
    final = result["final"]
    assert final["nfe_forward"] > 0 and np.isfinite(final["train_loss"])
    assert (final["nfe_backward"] > 0) == (method != "naive")
    assert 0.0 <= final["test_acc"] <= 1.0
    assert result["report"]["parameters"] == parameter_count(
        build_model("node18", width=4, ode_options={}))
    assert (Path(result["out_dir"]) / "last.pt").is_file()


def test_checkpoint_evaluated_with_another_solver(
    cifar_root: Path, trained: dict[str, dict], tmp_path: Path
) -> None:
    ckpt = Path(trained["aca"]["out_dir"]) / "last.pt"
    same = run(_cifar_config(cifar_root, "mode=eval", f"ckpt={ckpt}"), tmp_path / "same")
    assert same["metrics"]["test_loss"] == pytest.approx(
        trained["aca"]["final"]["test_loss"], rel=1e-5)
    swapped = run(_cifar_config(cifar_root, "mode=eval", f"ckpt={ckpt}", "solver=rk4",
                                "solver.step_size=0.25"), tmp_path / "rk4")
    # rk4 with h = 0.25 on [0, 1]: 4 steps x 4 stages in each of the 4 ODE blocks.
    assert swapped["metrics"]["test_nfe_per_batch"] == 4 * 4 * 4
    assert swapped["trained_with"]["solver"]["name"] == "heun_euler"
    assert swapped["metrics"]["test_loss"] != same["metrics"]["test_loss"]


def test_robustness_script_tabulates_each_test_solver(
    cifar_root: Path, trained: dict[str, dict], tmp_path: Path, monkeypatch
) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "solver_robustness.py"
    spec = importlib.util.spec_from_file_location("solver_robustness", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ckpt = Path(trained["aca"]["out_dir"]) / "last.pt"
    monkeypatch.setattr(sys, "argv", [
        str(script), str(ckpt), "trainer.max_batches_per_epoch=1", "--out", str(tmp_path),
        "--runs", str(tmp_path / "runs"), "--solvers", "euler:step_size=1.0",
        "rk4:step_size=0.25"])
    module.main()
    with open(tmp_path / "solver_robustness.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(row["test solver"], row["setting"]) for row in rows] == [
        ("euler", "step_size=1.0"), ("rk4", "step_size=0.25")]
    # NFE per test batch over the 4 ODE blocks: euler 1 step x 1 stage, rk4 4 steps x 4 stages.
    assert [float(row["NFE / test batch"]) for row in rows] == [4.0, 64.0]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_real_cifar_matches_published_checksums_and_sizes(name: str) -> None:
    data_dir = Path(os.environ.get("ACA_DATA_DIR", "data"))
    if not (data_dir / CIFAR_SPECS[name].folder).is_dir():
        pytest.skip(f"{name} not in {data_dir} (python scripts/download_cifar.py {name})")
    data = load_cifar(data_dir, name, verify=True)
    assert data.train_images.shape == (50_000, 3, 32, 32)
    assert torch.bincount(data.test_labels).tolist() == [10_000 // len(data.class_names)] * len(
        data.class_names)


def test_epoch_timing_script_fills_every_row(tmp_path: Path, monkeypatch) -> None:
    script = Path(__file__).resolve().parent.parent / "scripts" / "time_cifar_epoch.py"
    spec = importlib.util.spec_from_file_location("time_cifar_epoch", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", [str(script), "--out", str(tmp_path), "--width", "2",
                                      "--batch-size", "2", "--batches", "1", "--warmup", "0",
                                      "--device", "cpu"])
    module.main()
    lines = (tmp_path / "epoch_timing.md").read_text().splitlines()
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[4:]]
    assert [row[0] for row in rows] == ["NODE-18 (aca)", "NODE-18 (adjoint)", "NODE-18 (naive)",
                                        "ResNet-18"]
    nfe_backward = [float(row[5]) for row in rows]
    assert nfe_backward[0] > 0 and nfe_backward[1] > 0 and nfe_backward[2:] == [0.0, 0.0]
    assert rows[0][-1] == "1"  # ratios are relative to NODE-18 (aca)
