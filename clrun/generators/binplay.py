"""BinPlay's binary-latent autoencoder (Deja et al. 2021), following the authors' code (protocol
sheet), trained by `strategy=binplay`.

Every training sample gets a fixed latent code from its chronological index i (its position in
the stream of all tasks' training samples): C(i) = i·p^k mod 2^n, with n the latent size, p an
odd number (`code_prime`) and p^k its largest power below 2^n, unpacked into n ±1 bits.
Multiplying by an odd number is a bijection modulo 2^n, so the codes of up to 2^n samples are
distinct, and none needs storing. The authors' code evaluates the formula in 25 parts of 8 bits,
a prime each; by our reading of its integer arithmetic those codes repeat every 6,400 indices
(an MNIST task has 12,000 samples). clrun evaluates it over the whole latent in exact integers.

Per task, within one fit:
1. pre-training (`pretrain_epochs`): encoder and decoder reconstruct the task's images from the
   encoder's output; from epoch `code_warmup_epochs` on, the loss adds `code_weight`·‖e − c‖²
   between each embedding e and the nearest of the task's codes c not yet taken this epoch
   (greedy in batch order) — the encoder learns to put similar images on nearby codes;
2. assignment: in order, each image of the task takes the nearest untaken code (a bijection);
   the natural class of each code's image is kept;
3. decoding (`decoder_epochs`): the decoder learns (code, the task's binary code) → image. On
   the first task it starts from the pre-trained decoder (`decoder_lr`); from the second on, a
   freshly initialised decoder learns the task's pairs and, in the same step, as many pairs of
   every earlier task as the batch holds, decoded by the frozen previous decoder
   (`consolidation_lr`): every task is replayed equally. Both phases decay the learning rate
   by `lr_decay` per epoch. The next task's pre-training starts from a copy of this decoder.

Samples are decoded codes: of one task (`sample_task`), of one class (codes whose image had
that class), or of all tasks in equal shares.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from clrun.errors import ClrunError, ConfigError
from clrun.generators.base import Generator
from clrun.generators.multiband import binary_code, leaky_mlp
from clrun.generators.vae import RECONSTRUCTIONS, reconstruction_loss
from clrun.scenarios.batches import Batch
from clrun.strategies.importance import check_choice

PRETRAIN, DECODE = "pretrain", "decode"
ARCHITECTURES = ("conv", "fc")
CONV_SIDES = (28, 32)
DECODE_BATCH = 1024


def index_codes(indices: Tensor, bits: int, prime: int) -> Tensor:
    """±1 bits (most significant first) of C(i) = i·p^k mod 2^bits, p^k the largest power of
    `prime` below 2^bits, computed in exact integers."""
    multiplier = prime ** math.floor(bits * math.log(2) / math.log(prime))
    n_bytes = (bits + 7) // 8
    packed = b"".join(((i * multiplier) % (1 << bits)).to_bytes(n_bytes, "big")
                      for i in indices.tolist())
    unpacked = np.unpackbits(np.frombuffer(packed, dtype=np.uint8).reshape(-1, n_bytes), axis=1)
    bits_array = unpacked[:, n_bytes * 8 - bits:].astype(np.float32)
    return torch.from_numpy(bits_array).to(indices.device) * 2 - 1


def conv_encoder(channels: int, side: int, d: int, latent: int) -> nn.Sequential:
    """The authors' encoder: three 3×3 stride-2 convolutions (d, 2d, 4d channels, batch norm,
    leaky ReLU) and a linear layer to the latent."""
    layers: list[nn.Module] = []
    for c_in, c_out in ((channels, d), (d, 2 * d), (2 * d, 4 * d)):
        layers += [nn.Conv2d(c_in, c_out, 3, 2, 1, bias=False), nn.BatchNorm2d(c_out),
                   nn.LeakyReLU()]
    bottom = math.ceil(side / 8)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(4 * d * bottom * bottom, latent))


def conv_decoder_body(channels: int, side: int, d: int, inputs: int, latent: int
                      ) -> nn.Sequential:
    """The authors' decoder: two linear layers to d×8×8, then transposed convolutions up to
    28×28 or 32×32 (their kernel sizes per side)."""
    k = 4 if side == 32 else 3

    def up(c_in: int, c_out: int, kernel: int, stride: int, padding: int) -> list[nn.Module]:
        return [nn.ConvTranspose2d(c_in, c_out, kernel, stride, padding, bias=False),
                nn.BatchNorm2d(c_out), nn.LeakyReLU()]

    return nn.Sequential(
        nn.Linear(inputs, int(latent * 1.5)), nn.LeakyReLU(),
        nn.Linear(int(latent * 1.5), 64 * d), nn.LeakyReLU(), nn.Unflatten(1, (d, 8, 8)),
        *up(d, 4 * d, 3, 2, 2), *up(4 * d, 6 * d, k, 2, 0), *up(6 * d, 5 * d, k, 1, 0),
        nn.ConvTranspose2d(5 * d, channels, 4, 1, 1 if side == 32 else 2, bias=False))


class CodeDecoder(nn.Module):
    """(latent code, task index) → image logits; the task enters as ±1 bits of
    (task · task_prime) mod 2^task_bits."""

    def __init__(self, body: nn.Module, input_shape: tuple[int, ...], task_bits: int,
                 task_prime: int) -> None:
        super().__init__()
        self.body = body
        self.input_shape = input_shape
        self.task_bits, self.task_prime = task_bits, task_prime

    def forward(self, code: Tensor, task: Tensor) -> Tensor:
        task_code = binary_code(task, self.task_bits, self.task_prime).to(code.dtype)
        return self.body(torch.cat([code, task_code], dim=1)).view(-1, *self.input_shape)

    def images(self, code: Tensor, task: Tensor) -> Tensor:
        return torch.sigmoid(self(code, task).float())


def reinitialise(module: nn.Module) -> None:
    for layer in module.modules():
        if layer is not module and hasattr(layer, "reset_parameters"):
            layer.reset_parameters()


class BinaryAutoencoder(Generator):
    """Encoder, the decoder being pre-trained and the decoder that samples, plus the codes'
    bookkeeping: samples per task and the natural class of every code.

    `architecture=conv`: the authors' networks for 28×28 and 32×32 images (`width` is their d);
    `fc`: leaky-ReLU MLPs with `hidden_sizes` (mirrored in the decoder), any input.
    """

    trained_by_strategy = "binplay"

    def __init__(self, input_shape: tuple[int, ...], n_classes: int,
                 architecture: str = "conv", width: int = 32,
                 hidden_sizes: tuple[int, ...] = (400, 400), latent_size: int = 200,
                 code_prime: int = 3, task_bits: int = 10, task_prime: int = 307,
                 pretrain_epochs: int = 20, decoder_epochs: int = 200,
                 code_warmup_epochs: int = 3, code_weight: float = 400.0,
                 pretrain_lr: float = 0.001, decoder_lr: float = 0.005,
                 consolidation_lr: float = 0.001, lr_decay: float = 0.99,
                 reconstruction: str = "mse", **kwargs: Any) -> None:
        check_choice("generator.architecture", architecture, ARCHITECTURES)
        check_choice("generator.reconstruction", reconstruction, RECONSTRUCTIONS)
        channels, side = input_shape[0], input_shape[-1]
        if architecture == "conv" and (len(input_shape) != 3 or side not in CONV_SIDES
                                       or input_shape[1] != side):
            raise ConfigError("generator.architecture", architecture,
                              "needs 28×28 or 32×32 images; this scenario's are "
                              f"{tuple(input_shape)} (use generator.architecture=fc)")
        if code_prime < 3 or code_prime % 2 == 0:
            raise ConfigError("generator.code_prime", code_prime,
                              "must be odd and > 1 (codes must be distinct)")
        for key, value in (("pretrain_epochs", pretrain_epochs),
                           ("decoder_epochs", decoder_epochs), ("latent_size", latent_size)):
            if value < 1:
                raise ConfigError(f"generator.{key}", value, "must be a positive integer")
        super().__init__(input_shape=input_shape, n_classes=n_classes, **kwargs)
        self.automatic_optimization = False
        self.conditional = True  # every code keeps its class: sampling by class is free
        self.latent_size, self.code_prime = latent_size, code_prime
        self.pretrain_epochs, self.decoder_epochs = pretrain_epochs, decoder_epochs
        self.code_warmup_epochs, self.code_weight = code_warmup_epochs, code_weight
        self.pretrain_lr, self.decoder_lr = pretrain_lr, decoder_lr
        self.consolidation_lr, self.lr_decay = consolidation_lr, lr_decay
        self.reconstruction = reconstruction
        decoder_inputs = latent_size + task_bits
        if architecture == "conv":
            self.encoder = conv_encoder(channels, side, width, latent_size)
            body = conv_decoder_body(channels, side, width, decoder_inputs, latent_size)
        else:
            pixels = math.prod(input_shape)
            self.encoder = nn.Sequential(nn.Flatten(),
                                         leaky_mlp([pixels, *hidden_sizes]),
                                         nn.Linear(hidden_sizes[-1], latent_size))
            body = leaky_mlp([decoder_inputs, *reversed(hidden_sizes), pixels],
                             last_activation=False)
        self.pretrain_decoder = CodeDecoder(body, self.input_shape, task_bits, task_prime)
        self.decoder = copy.deepcopy(self.pretrain_decoder)
        # bookkeeping (checkpointed as extra state): training samples per task, the natural
        # class of every code, and how many tasks the sampling decoder has learned
        self.task_sizes: list[int] = []
        self.code_classes = torch.zeros(0, dtype=torch.long)
        self.tasks_learned = 0
        # this task's (not checkpointed: a task resumes from its start)
        self.task_index: int | None = None
        self.task_images: Tensor | None = None
        self.task_classes: Tensor | None = None
        self.task_codes: Tensor | None = None
        self.assignment: Tensor | None = None  # per image of the task, its code's offset
        self.previous_decoder: CodeDecoder | None = None
        self.earlier_codes: Tensor | None = None  # the codes the decoding phase replays

    # -- codes ------------------------------------------------------------------------------
    def task_start(self, task_index: int) -> int:
        """The chronological index of the task's first sample."""
        return sum(self.task_sizes[:task_index])

    def codes(self, indices: Tensor) -> Tensor:
        """The ±1 latent codes of chronological sample indices."""
        return index_codes(indices, self.latent_size, self.code_prime).to(self.device)

    def task_of(self, indices: Tensor) -> Tensor:
        ends = torch.tensor(self.task_sizes, device=indices.device).cumsum(0)
        return torch.searchsorted(ends, indices, right=True)

    # -- what strategy=binplay tells it ----------------------------------------------------
    def begin_task(self, index: int, images: Tensor, classes: Tensor) -> None:
        """Task `index` starts, with its training images (unit space, in split order) and
        their natural classes."""
        self.task_sizes = [*self.task_sizes[:index], len(images)]
        self.task_index, self.task_images, self.task_classes = index, images, classes
        start = self.task_start(index)
        self.task_codes = self.codes(torch.arange(start, start + len(images)))
        self.assignment = None
        self.previous_decoder = (copy.deepcopy(self.decoder).eval().requires_grad_(False)
                                 if index > 0 else None)
        if index > 0:  # the authors' local autoencoder keeps the last decoder
            self.pretrain_decoder.load_state_dict(self.decoder.state_dict())

    def labels_by_code(self, labels: Tensor) -> Tensor:
        """Per code of the current task (by offset), the label of the image it was given."""
        by_code = torch.empty_like(labels)
        by_code[self.assignment.to(labels.device)] = labels
        return by_code

    # -- phases -------------------------------------------------------------------------------
    def phase(self, epoch: int) -> tuple[str, int]:
        if epoch < self.pretrain_epochs:
            return PRETRAIN, epoch
        return DECODE, epoch - self.pretrain_epochs

    def training_budget(self, batches_per_epoch: int) -> dict[str, int]:
        if self.task_index is None:
            raise ClrunError("generator=binary_ae is trained by strategy=binplay; add it")
        return {"max_epochs": self.pretrain_epochs + self.decoder_epochs, "max_steps": -1}

    def configure_optimizers(self) -> None:
        return None  # a fresh optimizer per phase (on_train_epoch_start)

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        phase, epoch = self.phase(self.current_epoch)
        self.task_codes = self.task_codes.to(self.device)
        if phase == PRETRAIN:
            params = [*self.encoder.parameters(), *self.pretrain_decoder.parameters()]
            lr = self.pretrain_lr
            self._taken = torch.zeros(len(self.task_codes), dtype=torch.bool, device=self.device)
        else:
            params = list(self.decoder.parameters())
            lr = self.consolidation_lr if self.task_index else self.decoder_lr
            if epoch == 0:
                self.start_decoding()
        if epoch == 0:  # a fresh optimizer (the config's, Adam in the protocol) per phase
            self._optimizer = self.kept_optimizer.factory(params, lr=lr)
        for group in self._optimizer.param_groups:
            group["lr"] = lr * (self.lr_decay ** epoch if phase == DECODE else 1.0)

    def start_decoding(self) -> None:
        """Give every image of the task its code; the first task's decoder continues from the
        pre-trained one, later tasks' decoders start afresh. The earlier tasks' codes are
        computed once here (±1 as int8), not at every replay step."""
        self.assignment = self.assign_codes()
        self.earlier_codes = self.codes(torch.arange(self.task_start(self.task_index))).to(
            torch.int8)
        self.code_classes = torch.cat([self.code_classes[: self.task_start(self.task_index)],
                                       self.labels_by_code(self.task_classes.cpu())])
        if self.task_index == 0:
            self.decoder.load_state_dict(self.pretrain_decoder.state_dict())
        else:
            reinitialise(self.decoder)

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        if self.current_epoch == self.trainer.max_epochs - 1:  # the task is learned
            self.tasks_learned = self.task_index + 1
            self.previous_decoder = self.earlier_codes = None

    # -- matching embeddings to codes -------------------------------------------------------
    def match_codes(self, embeddings: Tensor, taken: Tensor) -> Tensor:
        """Greedily, in order, each embedding takes the nearest untaken code of the task
        (for ±1 codes the nearest is the one of largest dot product); marks them taken."""
        scores = embeddings.detach().float() @ self.task_codes.T
        scores[:, taken] = -math.inf
        chosen = torch.empty(len(embeddings), dtype=torch.long, device=embeddings.device)
        for i in range(len(embeddings)):
            chosen[i] = scores[i].argmax()
            scores[:, chosen[i]] = -math.inf
        taken[chosen] = True
        return chosen

    @torch.no_grad()
    def assign_codes(self) -> Tensor:
        """Each image of the task, in order, takes the nearest untaken code (eval mode, so
        every DDP rank computes the same assignment)."""
        was_training = self.training
        self.eval()
        taken = torch.zeros(len(self.task_codes), dtype=torch.bool, device=self.device)
        chosen = [self.match_codes(self.encoder(x.to(self.device)), taken)
                  for x in self.task_images.split(DECODE_BATCH)]
        self.train(was_training)
        return torch.cat(chosen)

    # -- losses -------------------------------------------------------------------------------
    def reconstruction_error(self, logits: Tensor, target: Tensor) -> Tensor:
        """Summed over pixels, averaged over the batch."""
        return reconstruction_loss(self.reconstruction, logits, target).sum() / len(target)

    def pretrain_loss(self, x: Tensor, epoch: int) -> Tensor:
        embeddings = self.encoder(x)
        task = torch.full((len(x),), self.task_index, device=x.device)
        loss = self.reconstruction_error(self.pretrain_decoder(embeddings, task), x)
        if epoch >= self.code_warmup_epochs:
            codes = self.task_codes[self.match_codes(embeddings, self._taken)]
            distance = (embeddings.float() - codes).pow(2).sum(1).mean()
            loss = loss + self.code_weight * distance
        return loss

    def decode_loss(self, x: Tensor, index: Tensor) -> Tensor:
        """The batch's (code, image) pairs plus as many of every earlier task, decoded by the
        previous decoder from random codes of that task."""
        codes = [self.task_codes[self.assignment[index]]]
        tasks = [torch.full((len(x),), self.task_index, device=x.device)]
        targets = [x]
        for earlier in range(self.task_index):
            offsets = torch.randint(self.task_sizes[earlier], (len(x),))
            indices = (offsets + self.task_start(earlier)).to(self.device)
            code = self.earlier_codes[indices].to(x.dtype)
            task = torch.full((len(x),), earlier, device=x.device)
            with torch.no_grad():
                targets.append(self.previous_decoder.images(code, task).to(x.dtype))
            codes.append(code)
            tasks.append(task)
        logits = self.decoder(torch.cat(codes), torch.cat(tasks))
        return self.reconstruction_error(logits, torch.cat(targets))

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        phase, epoch = self.phase(self.current_epoch)
        if phase == PRETRAIN:
            loss = self.pretrain_loss(batch.x, epoch)
        else:
            loss = self.decode_loss(batch.x, batch.index)
        self._optimizer.zero_grad()
        self.manual_backward(loss)
        self._optimizer.step()
        self.log_loss(f"{phase}_loss", loss)
        return loss.detach()

    # -- sampling -----------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, indices: Tensor) -> Tensor:
        """Images of chronological sample indices, from the sampling decoder."""
        parts = indices.cpu().split(DECODE_BATCH)
        images = [self.decoder.images(self.codes(part), self.task_of(part).to(self.device))
                  for part in parts]
        return torch.cat(images) if images else torch.zeros(0, *self.input_shape,
                                                            device=self.device)

    def task_indices(self, task_index: int, offsets: Tensor) -> Tensor:
        return offsets.cpu() + self.task_start(task_index)

    @torch.no_grad()
    def sample_task(self, n: int, task_index: int) -> Tensor:
        """n decoded random codes of task `task_index`."""
        offsets = torch.randint(self.task_sizes[task_index], (n,))
        return self.decode(self.task_indices(task_index, offsets))

    @torch.no_grad()
    def sample(self, n: int, conditions: Tensor | None = None) -> Tensor:
        """Decoded random codes: of the learned tasks in equal shares, or of each condition's
        natural class."""
        learned = max(self.tasks_learned, 1)
        if conditions is None:
            task = torch.arange(n) % learned
            sizes = torch.tensor(self.task_sizes[:learned])[task]
            starts = torch.tensor([self.task_start(t) for t in range(learned)])[task]
            return self.decode(starts + (torch.rand(n) * sizes).long())
        known = self.code_classes[: self.task_start(learned)]
        indices = torch.empty(n, dtype=torch.long)
        conditions = conditions.cpu()
        for cls in conditions.unique():
            wanted = conditions == cls
            pool = (known == cls).nonzero().flatten()
            if not len(pool):
                raise ClrunError(f"generator=binary_ae has no code of class {int(cls)}")
            indices[wanted] = pool[torch.randint(len(pool), (int(wanted.sum()),))]
        return self.decode(indices)

    # -- checkpoints --------------------------------------------------------------------------
    def get_extra_state(self) -> dict[str, Any]:
        return {"task_sizes": list(self.task_sizes), "code_classes": self.code_classes,
                "tasks_learned": self.tasks_learned}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.task_sizes = list(state["task_sizes"])
        self.code_classes = state["code_classes"].cpu()
        self.tasks_learned = int(state["tasks_learned"])

    def optimizer_state(self) -> dict[str, Any]:
        return {}  # nothing of an optimizer outlives its phase

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        pass
