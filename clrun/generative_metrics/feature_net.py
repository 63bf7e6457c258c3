"""The feature space generative metrics are computed in: a LeNet trained once per data set.

LeNet-5 with padded convolutions (conv5-6, pool, conv5-16, pool, 120, 84, classes), as the
Multiband VAE authors score MNIST; the features are the 84 penultimate activations before
their ReLU. It trains on the union of the scenario's training data with the data set's own
(natural) classes, on unit-space images, and is cached under
`<data_dir>/feature_nets/<data key>-<hash of its settings>.pt` with its test accuracy, so every
run of a sweep scores in the same space.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clrun.scenarios.base import Scenario, Split

FEATURES = 84


@dataclass(frozen=True)
class FeatureNetSettings:
    steps: int = 1500  # minibatches (data sets differ 50-fold in size; steps do not)
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0


class LeNet(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        channels, height, width = input_shape
        # pooling before the ReLU gives the same values (ReLU is monotone) on a quarter of them;
        # the convolutions keep their places (0, 3), so cached state dicts still load
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 6, 5, padding=2), nn.MaxPool2d(2, ceil_mode=True), nn.ReLU(),
            nn.Conv2d(6, 16, 5, padding=2), nn.MaxPool2d(2, ceil_mode=True), nn.ReLU(),
            nn.Flatten())
        size = 16 * math.ceil(math.ceil(height / 2) / 2) * math.ceil(math.ceil(width / 2) / 2)
        self.hidden = nn.Sequential(nn.Linear(size, 120), nn.ReLU(), nn.Linear(120, FEATURES))
        self.classifier = nn.Linear(FEATURES, n_classes)
        self.num_features = FEATURES  # read by torchmetrics' FID

    def features(self, x: Tensor) -> Tensor:
        return self.hidden(self.convs(x.float()))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(F.relu(self.features(x)))


class FeatureExtractor(nn.Module):
    """The features of unit-space images: the `feature` module given to torchmetrics' FID."""

    def __init__(self, net: LeNet) -> None:
        super().__init__()
        self.net = net
        self.num_features = FEATURES

    def forward(self, x: Tensor) -> Tensor:
        return self.net.features(x)


@dataclass
class TrainedFeatureNet:
    net: LeNet
    test_acc: float
    path: Path

    def describe(self) -> dict:
        return {"path": str(self.path), "test_acc": round(self.test_acc, 2)}


def _content_keys(x: Tensor) -> Tensor:
    """An integer per image that depends on its pixels alone (exact, no float rounding)."""
    weights = torch.randint(1, 2**20, (x[0].numel(),), generator=torch.Generator().manual_seed(0))
    keys = []
    for i in range(0, len(x), 4096):
        chunk = x[i:i + 4096].flatten(1).cpu()
        if chunk.is_floating_point():
            chunk = (chunk * 1e4).round()
        keys.append((chunk.long() * weights).sum(1))
    return torch.cat(keys)


def _union(scenario: Scenario, which: str) -> tuple[Tensor, Tensor]:
    """All tasks' images with natural labels, sorted by class and content: the same order
    whatever the split, class order or seed, so one data set trains one feature net."""
    splits = []
    for task in scenario.tasks:
        for split in ((task.train, task.val) if which == "train" else (task.test,)):
            if split is not None:
                splits.append(Split(split.x, scenario.natural_of(task, split.y), split.task))
    union = Split.cat(splits)
    order = torch.argsort(_content_keys(union.x), stable=True)
    order = order[torch.argsort(union.y[order].cpu(), stable=True)]
    return union.x[order.to(union.x.device)], union.y[order.to(union.y.device)]


def _accuracy(net: LeNet, x: Tensor, y: Tensor, scenario: Scenario) -> float:
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), 1024):
            inputs = scenario.pipeline.to_unit(x[i:i + 1024])
            correct += int((net(inputs).argmax(1) == y[i:i + 1024]).sum())
    return 100.0 * correct / max(len(y), 1)


def train_feature_net(scenario: Scenario, settings: FeatureNetSettings) -> tuple[LeNet, float]:
    x, y = _union(scenario, "train")
    x, y = x.cpu(), y.cpu()
    with torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        net = LeNet(scenario.input_shape, scenario.n_natural)
        optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
        order, position = torch.randperm(len(y)), 0
        for _ in range(settings.steps):
            if position + settings.batch_size > len(y):  # a new epoch: reshuffle
                order, position = torch.randperm(len(y)), 0
            index = order[position:position + settings.batch_size]
            position += settings.batch_size
            loss = F.cross_entropy(net(scenario.pipeline.to_unit(x[index])), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    test_x, test_y = _union(scenario, "test")
    return net, _accuracy(net, test_x.cpu(), test_y.cpu(), scenario)


def cache_path(scenario: Scenario, settings: FeatureNetSettings, data_dir: Path) -> Path:
    key = json.dumps({"data": scenario.data_key, "shape": list(scenario.input_shape),
                      "classes": scenario.n_natural, "net": "lenet5-84",
                      "order": "class, content", **asdict(settings)},
                     sort_keys=True)
    digest = hashlib.sha1(key.encode()).hexdigest()[:12]
    return data_dir / "feature_nets" / f"{scenario.data_key}-{digest}.pt"


def feature_net(scenario: Scenario, settings: FeatureNetSettings, data_dir: Path
                ) -> TrainedFeatureNet:
    """The cached feature net of this scenario's data, trained now if there is none."""
    path = cache_path(scenario, settings, data_dir)
    if path.is_file():
        with torch.random.fork_rng():  # the run's random stream must not depend on the cache
            net = LeNet(scenario.input_shape, scenario.n_natural)
        saved = torch.load(path, weights_only=True)
        net.load_state_dict(saved["state"])
        return TrainedFeatureNet(net.eval(), float(saved["test_acc"]), path)
    print(f"clrun: training the feature net for generative metrics on {scenario.data_key} "
          f"(once; cached in {path.parent})", file=sys.stderr, flush=True)
    net, test_acc = train_feature_net(scenario, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        torch.save({"state": net.state_dict(), "test_acc": test_acc}, handle)
    os.replace(tmp, path)
    return TrainedFeatureNet(net, test_acc, path)
