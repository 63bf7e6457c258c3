"""MNIST-family data: the IDX file format (gzipped or not), found where users keep it.

Looks in torchvision's layout under `data_dir` (`<data_dir>/FashionMNIST/raw/...`), directly in
`data_dir`, and in Debian's package location for Fashion-MNIST; downloads through torchvision
only when the config allows it. A missing or damaged file is a `DataError`, never a fallback.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from clrun.errors import DataError


@dataclass(frozen=True)
class IdxDataset:
    """Where one MNIST-family data set lives and how to get it."""

    name: str                 # clrun's name, used in messages
    torchvision_name: str     # class in torchvision.datasets and its folder name
    system_dirs: tuple[str, ...] = ()
    package_hint: str = ""


MNIST = IdxDataset("MNIST", "MNIST")
FASHION_MNIST = IdxDataset(
    "Fashion-MNIST", "FashionMNIST", ("/usr/share/datasets/fashion-mnist",),
    "or install Debian's dataset-fashion-mnist package")

FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file; a bad magic number or a short payload names the file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise DataError(f"cannot read {path}: {error}; delete it and fetch it again") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise DataError(f"{path} is not an IDX file (bad header); delete it and fetch it again")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated (header); delete it and fetch it again")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_DTYPES[data[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{path} is truncated or corrupt: {len(data) - header} bytes of data, "
                        f"expected {expected}; delete it and fetch it again")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def candidate_dirs(dataset: IdxDataset, data_dir: Path) -> list[Path]:
    return [data_dir / dataset.torchvision_name / "raw", data_dir,
            *(Path(d) for d in dataset.system_dirs)]


def _find(directory: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _download(dataset: IdxDataset, data_dir: Path) -> None:
    import torchvision.datasets

    try:
        for train in (True, False):
            getattr(torchvision.datasets, dataset.torchvision_name)(
                str(data_dir), train=train, download=True)
    except Exception as error:  # network errors come in many types; report them in one line
        raise DataError(f"downloading {dataset.name} into {data_dir} failed: "
                        f"{str(error).splitlines()[0] if str(error) else type(error).__name__}"
                        ) from None


def load_idx_dataset(dataset: IdxDataset, data_dir: Path, download: bool
                     ) -> dict[str, tuple[Tensor, Tensor]]:
    """{'train': (x uint8 [N,1,28,28], y int64), 'test': ...} from the first folder holding all
    four files."""
    dirs = candidate_dirs(dataset, data_dir)
    for attempt in range(2):
        for directory in dirs:
            paths = {split: [_find(directory, stem) for stem in stems]
                     for split, stems in FILES.items()}
            if all(p is not None for pair in paths.values() for p in pair):
                return {split: _tensors(*pair) for split, pair in paths.items()}
        if attempt == 0 and download:
            _download(dataset, data_dir)
        else:
            break
    looked = ", ".join(str(d) for d in dirs)
    hint = f" {dataset.package_hint}" if dataset.package_hint else ""
    raise DataError(f"{dataset.name} not found (looked in {looked}); run with "
                    f"scenario.download=true on a machine with network, or put the four IDX "
                    f"files under {dirs[0]}{hint}")


def _tensors(images_path: Path, labels_path: Path) -> tuple[Tensor, Tensor]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise DataError(f"{images_path} and {labels_path} do not match: images {images.shape}, "
                        f"labels {labels.shape}")
    x = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))
