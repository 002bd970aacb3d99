"""CIFAR-10/100 read from the standard ``cifar-*-python`` pickle folders.

The whole dataset is held as one uint8 tensor ``(N, 3, 32, 32)`` plus int64
labels; augmentation (random crop with zero padding, horizontal flip) and
normalisation run on whole batches on the training device, so no per-image
Python transform stands between the data and a GPU. Nothing is downloaded
implicitly: :func:`download_cifar` (``scripts/download_cifar.py``) is the only
code that touches the network.
"""

from __future__ import annotations

import hashlib
import pickle
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from aca.errors import ConfigError, DataError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
IMAGE_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class CifarSpec:
    """Where one CIFAR variant lives and what its files must contain.

    The md5 sums are those of the files distributed at
    https://www.cs.toronto.edu/~kriz/cifar.html (the same values torchvision checks).
    """

    folder: str
    url: str
    archive_md5: str
    train_files: tuple[tuple[str, str], ...]
    test_files: tuple[tuple[str, str], ...]
    meta_file: tuple[str, str]
    label_key: str
    class_names_key: str
    num_classes: int
    train_size: int
    test_size: int

    @property
    def archive_name(self) -> str:
        return self.url.rsplit("/", 1)[-1]


CIFAR_SPECS: dict[str, CifarSpec] = {
    "cifar10": CifarSpec(
        folder="cifar-10-batches-py",
        url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        archive_md5="c58f30108f718f92721af3b95e74349a",
        train_files=(
            ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
            ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
            ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
            ("data_batch_4", "634d18415352ddfa80567beed471001a"),
            ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        ),
        test_files=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
        meta_file=("batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
        label_key="labels",
        class_names_key="label_names",
        num_classes=10,
        train_size=50_000,
        test_size=10_000,
    ),
    "cifar100": CifarSpec(
        folder="cifar-100-python",
        url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
        archive_md5="eb9058c3a382ffc7106e4002c42a8d85",
        train_files=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
        test_files=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
        meta_file=("meta", "7973b15100ade9c7d40fb424638fde48"),
        label_key="fine_labels",
        class_names_key="fine_label_names",
        num_classes=100,
        train_size=50_000,
        test_size=10_000,
    ),
}


class CifarFormatError(DataError):
    """A CIFAR file exists but does not hold what the standard format promises."""


class CifarDownloadError(DataError, OSError):
    """The archive could not be fetched (no network, an HTTP error)."""


@dataclass
class CifarData:
    """One CIFAR variant in memory: uint8 images ``(N, 3, 32, 32)``, int64 labels."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]


def cifar_spec(name: str) -> CifarSpec:
    """The spec of ``name``; a clear error listing the valid names otherwise."""
    if name not in CIFAR_SPECS:
        raise ConfigError(f"unknown CIFAR dataset {name!r}; choose one of {sorted(CIFAR_SPECS)}")
    return CIFAR_SPECS[name]


def md5sum(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# The pickles hold only dicts, lists, strings and numpy arrays; refuse any other
# global so that a tampered file cannot run code when it is read.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): __import__("codecs").encode,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise CifarFormatError(f"unexpected object {module}.{name} in a CIFAR pickle")
        return _ALLOWED_GLOBALS[(module, name)]


def _read_pickle(path: Path) -> dict:
    with open(path, "rb") as file:
        content = _NumpyOnlyUnpickler(file, encoding="latin1").load()
    if not isinstance(content, dict):
        raise CifarFormatError(f"{path}: expected a dict, found {type(content).__name__}")
    return content


def _read_batch(path: Path, spec: CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    content = _read_pickle(path)
    for key in ("data", spec.label_key):
        if key not in content:
            raise CifarFormatError(f"{path}: key {key!r} missing (found {sorted(content)})")
    data = np.asarray(content["data"])
    labels = np.asarray(content[spec.label_key], dtype=np.int64)
    row_size = int(np.prod(IMAGE_SHAPE))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != row_size:
        raise CifarFormatError(
            f"{path}: data must be uint8 of shape (N, {row_size}), found {data.dtype} {data.shape}"
        )
    if labels.shape != (data.shape[0],):
        raise CifarFormatError(
            f"{path}: {labels.shape[0]} labels for {data.shape[0]} images"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= spec.num_classes):
        raise CifarFormatError(
            f"{path}: labels must lie in [0, {spec.num_classes - 1}], "
            f"found [{labels.min()}, {labels.max()}]"
        )
    return data.reshape(-1, *IMAGE_SHAPE), labels


def _read_split(
    folder: Path, files: tuple[tuple[str, str], ...], spec: CifarSpec, verify: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for file_name, expected_md5 in files:
        path = folder / file_name
        _check_file(path, expected_md5, verify)
        batch_images, batch_labels = _read_batch(path, spec)
        images.append(batch_images)
        labels.append(batch_labels)
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def _check_file(path: Path, expected_md5: str, verify: bool) -> None:
    if not path.is_file():
        raise DataError(f"CIFAR file {path} is missing")
    if verify and (actual := md5sum(path)) != expected_md5:
        raise CifarFormatError(
            f"{path}: md5 {actual} differs from the published {expected_md5}; the file is "
            "corrupt or not the official one (task.verify_checksums=false skips this check)"
        )


def download_command(name: str, data_dir: str | Path) -> str:
    return f"python scripts/download_cifar.py {name} --data-dir {data_dir}"


def load_cifar(data_dir: str | Path, name: str = "cifar10", verify: bool = True) -> CifarData:
    """Read ``<data_dir>/cifar-10-batches-py`` or ``<data_dir>/cifar-100-python``.

    Checks every file's md5 against the published one (``verify``), the array
    shapes and the label range. With ``verify`` the split sizes must also be the
    official 50,000/10,000 (a small hand-made folder needs ``verify=False``).
    """
    spec = cifar_spec(name)
    folder = Path(data_dir).expanduser() / spec.folder
    if not folder.is_dir():
        raise DataError(
            f"{name}: expected the folder {folder} (the extracted {spec.archive_name}); "
            f"download it with `{download_command(name, data_dir)}` or set data_dir "
            "(env ACA_DATA_DIR) to the folder that contains it"
        )
    train_images, train_labels = _read_split(folder, spec.train_files, spec, verify)
    test_images, test_labels = _read_split(folder, spec.test_files, spec, verify)
    meta_name, meta_md5 = spec.meta_file
    _check_file(folder / meta_name, meta_md5, verify)
    class_names = list(_read_pickle(folder / meta_name).get(spec.class_names_key, []))
    if len(class_names) != spec.num_classes:
        raise CifarFormatError(
            f"{folder / meta_name}: expected {spec.num_classes} names under "
            f"{spec.class_names_key!r}, found {len(class_names)}"
        )
    if verify and (len(train_labels), len(test_labels)) != (spec.train_size, spec.test_size):
        raise CifarFormatError(
            f"{folder}: expected {spec.train_size}/{spec.test_size} train/test images, "
            f"found {len(train_labels)}/{len(test_labels)}"
        )
    return CifarData(train_images, train_labels, test_images, test_labels, class_names)


def download_cifar(name: str, data_dir: str | Path) -> Path:
    """Download the official archive into ``data_dir``, check its md5 and extract it.

    Explicit opt-in only (``scripts/download_cifar.py``); never called by training.
    """
    spec = cifar_spec(name)
    data_dir = Path(data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    archive = data_dir / spec.archive_name
    if not archive.is_file() or md5sum(archive) != spec.archive_md5:
        partial = archive.with_suffix(".part")
        try:
            urllib.request.urlretrieve(spec.url, partial)
        except OSError as error:  # no network, DNS, HTTP error, disk full
            partial.unlink(missing_ok=True)
            reason = getattr(error, "reason", None) or error
            raise CifarDownloadError(f"cannot download {spec.url} ({reason}); without "
                                     f"internet, copy {spec.archive_name} or the extracted "
                                     f"{spec.folder}/ into {data_dir}") from error
        partial.replace(archive)
    if (actual := md5sum(archive)) != spec.archive_md5:
        raise CifarFormatError(f"{archive}: md5 {actual}, expected {spec.archive_md5}")
    with tarfile.open(archive, "r:gz") as tar:
        # The "data" filter (Python >= 3.10.12) refuses links and paths leaving data_dir.
        safety = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(data_dir, **safety)
    return data_dir / spec.folder


def random_crop_flip(
    images: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random ``HxW`` crop of the zero-padded images, then a horizontal flip with
    probability 1/2, per image, for a whole batch ``(N, C, H, W)`` at once on its
    device (torchvision's RandomCrop(padding) + RandomHorizontalFlip). The dtype
    is kept, so it runs on uint8 before normalisation, as torchvision pads."""
    n, c, h, w = images.shape
    device = images.device
    padded = F.pad(images, (padding, padding, padding, padding))
    shift_y = torch.randint(0, 2 * padding + 1, (n, 1), device=device, generator=generator)
    shift_x = torch.randint(0, 2 * padding + 1, (n, 1), device=device, generator=generator)
    flip = torch.rand(n, 1, device=device, generator=generator) < 0.5
    rows = shift_y + torch.arange(h, device=device)
    columns = torch.arange(w, device=device)
    columns = shift_x + torch.where(flip, w - 1 - columns, columns)
    return padded[
        torch.arange(n, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows[:, None, :, None],
        columns[:, None, None, :],
    ]


def normalize(
    images: torch.Tensor, mean: tuple[float, ...] = CIFAR_MEAN, std: tuple[float, ...] = CIFAR_STD
) -> torch.Tensor:
    """uint8 images in [0, 255] -> float32, per-channel ``(x / 255 - mean) / std``."""
    mean_t = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    std_t = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    return (images.float() / 255.0 - mean_t) / std_t
