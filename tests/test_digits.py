"""The digits stand-in: data split, model sizes, and a short training run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import compose_config

from aca.errors import ConfigError
from aca.models.resnet import build_model, parameter_count
from aca.tasks.digits import load_digits_tensors, stratified_split
from aca.train import run

pytest.importorskip("sklearn")


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Small convolutions on a shared 2-core machine are much faster on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_digits_tensors() -> None:
    images, labels = load_digits_tensors()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == torch.float32
    assert images.min() == 0.0 and images.max() == 1.0
    assert labels.unique().tolist() == list(range(10))


def test_stratified_split_is_disjoint_complete_and_balanced() -> None:
    labels = torch.arange(10).repeat_interleave(20)
    train, test = stratified_split(labels, test_fraction=0.25, seed=3)
    assert sorted(train.tolist() + test.tolist()) == list(range(200))
    assert torch.bincount(labels[test]).tolist() == [5] * 10
    again_train, again_test = stratified_split(labels, test_fraction=0.25, seed=3)
    assert torch.equal(train, again_train) and torch.equal(test, again_test)
    other_train, _ = stratified_split(labels, test_fraction=0.25, seed=4)
    assert not torch.equal(train, other_train)


def test_bad_test_fraction_is_refused() -> None:
    with pytest.raises(ConfigError, match="test_fraction"):
        stratified_split(torch.zeros(4, dtype=torch.int64), 1.0, seed=0)


def test_digits_node_and_resnet_have_equal_size() -> None:
    options = {"solver": "heun_euler", "gradient": "aca", "rtol": 1e-2, "atol": 1e-2}
    node = build_model("node18", width=16, num_stages=2, in_channels=1, ode_options=options)
    resnet = build_model("resnet18", width=16, num_stages=2, in_channels=1)
    assert parameter_count(node) == parameter_count(resnet)
    assert node(torch.randn(3, 1, 8, 8)).shape == (3, 10)


@pytest.mark.parametrize("model", ["node18", "resnet18"])
def test_one_epoch_learns_digits(model: str, tmp_path: Path) -> None:
    cfg = compose_config("task=digits", f"task.model={model}", "task.epochs=1",
                         "trainer.device=cpu", "trainer.progress=false",
                         "trainer.checkpoint=false", "solver=heun_euler",
                         "solver.rtol=1e-2", "solver.atol=1e-2")
    result = run(cfg, tmp_path)
    final = result["final"]
    assert final["test_acc"] > 0.3  # chance is 0.1; a label or data mix-up stays near it
    assert (final["nfe"] > 0) == (model == "node18")
    assert result["report"]["parameters"] == 42_938
