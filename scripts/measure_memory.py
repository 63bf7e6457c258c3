"""Peak resident memory of a 20-task split CIFAR-100 scenario, built from files in the real
format (torchvision's python pickle batches, 50 000 train and 10 000 test images) written to a
temporary folder, then iterated once through every task's augmented training batches.

    python scripts/measure_memory.py
"""

from __future__ import annotations

import pickle
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def write_cifar100(root: Path) -> None:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", 50_000), ("test", 10_000)):
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"fine_labels": [i % 100 for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    import torch

    from clrun.scenarios.batches import TensorBatches
    from clrun.scenarios.benchmarks import split

    with tempfile.TemporaryDirectory() as tmp:
        # written by a child process, so writing does not count in this one's peak
        subprocess.run([sys.executable, __file__, "--write", tmp], check=True)
        before = peak_mib()
        scenario = split("CIFAR-100", "split_cifar100", data_dir=tmp, seed=0, n_tasks=20,
                         normalize=True, crop_padding=4, horizontal_flip=True)
        stored = sum(t.train.x.numel() + t.test.x.numel() for t in scenario.tasks)
        for task in scenario.tasks:
            for batch in TensorBatches(task.train, scenario.pipeline, 128, True, False, 0):
                torch.nn.functional.avg_pool2d(batch.x, 2)
        print(f"tasks={scenario.n_tasks} images stored as uint8: {stored / 2**20:.0f} MiB; "
              f"peak RSS before loading {before:.0f} MiB, after building and iterating "
              f"{peak_mib():.0f} MiB")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        write_cifar100(Path(sys.argv[2]))
    else:
        main()
