"""CIFAR-10/100 image classification with NODE-18 or ResNet-18 (docs/paper.md, experiment 3).

``aca-run task=cifar10 task.model=node18 method=aca`` trains on the standard
pickle folders in ``data_dir``; the CPU default in configs/task/cifar10.yaml is
a narrow network on a subset, the paper recipe is ``+experiment=cifar_paper``
(``task=cifar100`` for CIFAR-100).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from aca.data.cifar import CIFAR_SPECS, load_cifar, normalize, random_crop_flip
from aca.models.resnet import MODEL_NAMES, build_model, parameter_count
from aca.task import Task
from aca.tasks.base import check_names


class ImageClassificationTask(Task):
    """Shared part of the CIFAR and digits tasks: a ResNet/NODE classifier
    (``task.model``, ``task.width``, ``task.num_stages``), cross-entropy loss,
    accuracy. Subclasses provide the data and ``num_classes``/``in_channels``."""

    num_classes: int = 10
    in_channels: int = 3

    def __init__(self, settings: DictConfig, ode: dict[str, Any], seed: int = 0,
                 data_dir: str | Path = "data") -> None:
        super().__init__(settings, ode, seed, data_dir)
        check_names([settings.model], MODEL_NAMES, "task.model")

    def model(self) -> nn.Module:
        task = self.settings
        return build_model(
            task.model,
            num_classes=self.num_classes,
            width=task.width,
            num_stages=task.num_stages,
            in_channels=self.in_channels,
            ode_options=self.ode,
        )

    def loss(
        self, model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], step: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        images, labels = batch
        logits = model(images)
        loss = F.cross_entropy(logits, labels)
        accuracy = (logits.argmax(dim=1) == labels).float().mean()
        return loss, {"loss": loss.item(), "acc": accuracy.item()}

    def report(self, model: nn.Module, data: tuple[Dataset, Dataset],
               history: list[dict[str, float]], out_dir: Path) -> dict:
        return {"model": self.settings.model, "parameters": parameter_count(model)}


class CifarTask(ImageClassificationTask):
    """CIFAR-10 or CIFAR-100 (``task.dataset``) held as uint8 tensors; random
    crop/flip and normalisation happen per batch on the training device."""

    def __init__(self, settings: DictConfig, ode: dict[str, Any], seed: int = 0,
                 data_dir: str | Path = "data") -> None:
        super().__init__(settings, ode, seed, data_dir)
        check_names([settings.dataset], sorted(CIFAR_SPECS), "task.dataset")
        self.num_classes = CIFAR_SPECS[settings.dataset].num_classes

    def datasets(self) -> tuple[TensorDataset, TensorDataset]:
        task = self.settings
        data = load_cifar(self.data_dir, task.dataset, verify=task.verify_checksums)
        train_size, test_size = task.get("train_size"), task.get("test_size")
        train = TensorDataset(data.train_images[:train_size], data.train_labels[:train_size])
        test = TensorDataset(data.test_images[:test_size], data.test_labels[:test_size])
        return train, test

    def prepare_batch(
        self, batch: tuple[torch.Tensor, torch.Tensor], train: bool
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = batch
        if train and self.settings.augment:
            images = random_crop_flip(images, padding=4)
        return normalize(images), labels
