"""Download CIFAR-10/100 (explicit opt-in; training never downloads anything).

    python scripts/download_cifar.py cifar10 --data-dir data
    python scripts/download_cifar.py cifar100 --data-dir data

Fetches the official archive from https://www.cs.toronto.edu/~kriz/, checks its
md5, extracts it into the data directory and then reads it back with every
file's md5, shape and label range checked (aca.data.cifar.load_cifar).
"""

from __future__ import annotations

import argparse
import os
import sys

from aca.data.cifar import CIFAR_SPECS, download_cifar, load_cifar
from aca.errors import DataError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", choices=sorted(CIFAR_SPECS))
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("ACA_DATA_DIR", "data"),
        help="folder that will contain cifar-10-batches-py / cifar-100-python "
        "(default: $ACA_DATA_DIR or ./data, the runner's data_dir)",
    )
    args = parser.parse_args()
    for name in args.datasets:
        try:
            folder = download_cifar(name, args.data_dir)
            data = load_cifar(args.data_dir, name, verify=True)
        except DataError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        print(f"{name}: {folder} ok, {len(data.train_labels)} train / "
              f"{len(data.test_labels)} test images, checksums verified")


if __name__ == "__main__":
    main()
