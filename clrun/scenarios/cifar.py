"""CIFAR-10/100 from torchvision's on-disk format (python pickle batches)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clrun.errors import DataError

CIFAR = {
    "CIFAR-10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                 b"labels", "CIFAR10"),
    "CIFAR-100": ("cifar-100-python", ["train"], ["test"], b"fine_labels", "CIFAR100"),
}
MEAN_STD = {
    "CIFAR-10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "CIFAR-100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}


def _read_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as handle:
            batch = pickle.load(handle, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key], dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path} is truncated or corrupt ({type(error).__name__}); delete it and "
                        "fetch it again") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"{path} is corrupt: data {data.shape}, labels {labels.shape}")
    return data, labels


def _download(name: str, data_dir: Path) -> None:
    import torchvision.datasets

    try:
        getattr(torchvision.datasets, CIFAR[name][4])(str(data_dir), train=True, download=True)
    except Exception as error:  # network errors come in many types; report them in one line
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"downloading {name} into {data_dir} failed: {first}") from None


def load_cifar(name: str, data_dir: Path, download: bool) -> dict[str, tuple[Tensor, Tensor]]:
    """{'train': (x uint8 [N,3,32,32], y), 'test': ...} from `<data_dir>/<torchvision folder>`."""
    folder, train_files, test_files, label_key, _ = CIFAR[name]
    root = data_dir / folder
    files = [root / f for f in train_files + test_files]
    if not all(f.is_file() for f in files) and download:
        _download(name, data_dir)
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{name} not found in {root} (missing {', '.join(missing)}); run with "
                        "scenario.download=true on a machine with network, or extract "
                        f"torchvision's {folder} archive into {data_dir}")

    def read(names: list[str]) -> tuple[Tensor, Tensor]:
        parts = [_read_batch(root / n, label_key) for n in names]
        if len(parts) == 1:  # CIFAR-100: no concatenation copy
            x, y = parts[0]
        else:
            x = np.concatenate([p[0] for p in parts])
            y = np.concatenate([p[1] for p in parts])
        x = x.reshape(-1, 3, 32, 32)
        return torch.from_numpy(x), torch.from_numpy(y)

    return {"train": read(train_files), "test": read(test_files)}
