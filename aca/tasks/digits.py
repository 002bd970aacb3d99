"""A real-image CPU stand-in for the CIFAR experiment: scikit-learn's 8x8
handwritten digits (1,797 images, shipped with scikit-learn, no download),
classified by a narrow NODE-18 or ResNet-18 (same code as CIFAR, one input
channel, fewer stages). Trains in seconds per epoch on one core."""

from __future__ import annotations

import torch
from torch.utils.data import TensorDataset

from aca.errors import ConfigError, MissingExtraError
from aca.tasks.cifar import ImageClassificationTask

DIGITS_MAX_VALUE = 16.0  # pixel values are integers 0..16


def load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(1797, 1, 8, 8)`` float32 in [0, 1] and int64 labels 0..9."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise MissingExtraError("task=digits (scikit-learn's digits)", "digits", error) from error
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / DIGITS_MAX_VALUE
    return images, torch.tensor(digits.target, dtype=torch.int64)


def stratified_split(
    labels: torch.Tensor, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test indices with each class split in the same proportion;
    fixed by ``seed`` so that every run (and every method) sees the same split."""
    if not 0.0 < test_fraction < 1.0:
        raise ConfigError(f"task.test_fraction={test_fraction} is invalid; expected a fraction "
                          "in (0, 1)")
    generator = torch.Generator().manual_seed(seed)
    train, test = [], []
    for label in labels.unique():
        members = torch.nonzero(labels == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        num_test = round(test_fraction * len(members))
        test.append(members[:num_test])
        train.append(members[num_test:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


class DigitsTask(ImageClassificationTask):
    """8x8 digits, standardised with the training split's mean and std (the data
    is tiny, so it is normalised once here rather than per batch)."""

    in_channels = 1

    def datasets(self) -> tuple[TensorDataset, TensorDataset]:
        images, labels = load_digits_tensors()
        train_index, test_index = stratified_split(
            labels, self.settings.test_fraction, self.settings.split_seed
        )
        train_images = images[train_index]
        images = (images - train_images.mean()) / train_images.std()
        return (
            TensorDataset(images[train_index], labels[train_index]),
            TensorDataset(images[test_index], labels[test_index]),
        )
