"""Brain-inspired replay: the class-mode prior, the decoder's class gates, conditional replay of
the classes seen before, and a run from the config that resumes to the same metrics."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from clrun.errors import ClrunError
from clrun.generators.feedback import GatedFeedbackVAE
from clrun.run import run
from clrun.strategies.brain_inspired import BrainInspiredReplay
from tests.conftest import FAST, compose_cfg, interrupt_then_resume

BIR = ("strategy=bir", "generator=vae", "model.hidden_sizes=[32]", "generator.z_dim=8",
       "metrics.prd.runs=1", "seed=4", *FAST)


def test_prior_is_the_mixture_of_the_class_modes():
    torch.manual_seed(0)
    vae = GatedFeedbackVAE(16, (1, 8, 8), [32], 4, n_classes=3, gate_proportion=0.5)
    z, probs = torch.randn(6, 4), torch.softmax(torch.randn(6, 3), dim=1)
    with torch.no_grad():
        loc = vae.prior_means.expand(6, 3, 4)
        scale = (0.5 * vae.prior_logvars).exp().expand(6, 3, 4)
        mixture = MixtureSameFamily(Categorical(probs=probs), Independent(Normal(loc, scale), 1))
        assert torch.allclose(vae.log_prior(z, probs), mixture.log_prob(z), atol=1e-4)
        one_class = Independent(Normal(vae.prior_means[2], scale[0, 2]), 1).log_prob(z)
        assert torch.allclose(vae.log_prior(z, F.one_hot(torch.full((6,), 2), 3).float()),
                              one_class, atol=1e-4)


def test_a_class_decodes_through_its_own_gates_only():
    torch.manual_seed(0)
    vae = GatedFeedbackVAE(16, (1, 8, 8), [400, 300], 4, n_classes=10, gate_proportion=0.8)
    masks = vae.decoder.masks()
    assert [tuple(m.shape) for m in masks] == [(10, 300), (10, 400)]
    off = 1 - torch.cat([m.flatten() for m in masks]).mean()
    assert 0.75 < float(off) < 0.85  # gate_proportion of the units off per class
    assert {"decoder.mask_0", "decoder.mask_1", "prior_means"} <= set(vae.state_dict())
    z = torch.randn(5, 4)
    c, d = vae.one_hot(torch.full((5,), 3)), vae.one_hot(torch.full((5,), 7))
    before_c, before_d = vae.decoder(z, c), vae.decoder(z, d)
    with torch.no_grad():  # scramble the units class 3 has gated off in the last hidden layer
        gated_off = masks[1][3] == 0
        vae.decoder.hidden[1].weight[gated_off] = torch.randn(int(gated_off.sum()), 300)
    assert torch.allclose(vae.decoder(z, c), before_c)
    assert not torch.allclose(vae.decoder(z, d), before_d)  # class 7 uses some of them


def test_samples_come_from_the_asked_class_mode():
    torch.manual_seed(0)
    vae = GatedFeedbackVAE(16, (1, 8, 8), [32], 4, n_classes=3, gate_proportion=0.5)
    with torch.no_grad():
        vae.prior_logvars.fill_(-30.0)  # every sample at its mode's mean
    classes = torch.tensor([0, 2, 2, 1])
    expected = torch.sigmoid(vae.decoder(vae.prior_means[classes], vae.one_hot(classes)))
    assert torch.allclose(vae.sample(4, classes), expected.view(4, 1, 8, 8), atol=1e-5)


def test_bir_replays_the_earlier_classes_and_resumes_exactly(tmp_path, monkeypatch):
    drawn: dict[int, set[int]] = {}
    original = BrainInspiredReplay.draw_replay

    def spy(self, n):  # noqa: ANN001
        x, contexts = original(self, n)
        drawn.setdefault(self.task.index, set()).update(contexts.argmax(1).tolist())
        return x, contexts

    monkeypatch.setattr(BrainInspiredReplay, "draw_replay", spy)
    full = run(compose_cfg(*BIR), tmp_path / "full")
    scenario_classes = [{2 * t, 2 * t + 1} for t in range(5)]  # split digits, fixed order
    assert sorted(drawn) == [1, 2, 3, 4]
    for t, classes in drawn.items():
        assert classes == set().union(*scenario_classes[:t])
    state = torch.load(tmp_path / "full" / "checkpoints" / "checkpoint.pt", weights_only=True)
    assert {"feedback.prior_means", "feedback.decoder.mask_0"} <= set(state["model"])
    assert all(v is not None for v in full.generative["fid"][-1])
    assert (tmp_path / "full" / "samples" / "task_4.png").read_bytes().startswith(b"\x89PNG")
    interrupt_then_resume(BIR, tmp_path / "cut")
    assert (tmp_path / "cut" / "metrics.json").read_text() == \
        (tmp_path / "full" / "metrics.json").read_text()


@pytest.mark.parametrize("args,needle", [
    (["strategy=bir"], "brain-inspired replay takes its latent size and decoder from "
                       "generator=vae; add generator=vae"),
    (["strategy=bir", "generator=conv_vae"], "brain-inspired replay needs the fully connected"),
    (["strategy=bir", "generator=vae", "strategy.plugins.bir.gate_proportion=1"],
     "gate_proportion=1 is invalid"),
    (["strategy=bir", "generator=vae", "strategy.plugins.bir.internal_replay=true"],
     "strategy.plugins.bir.internal_replay=True is invalid: replays the output of "
     "convolutional layers: use a convolutional model"),
    (["strategy=bir", "generator=vae", "strategy.plugins.bir.frozen_layers=3"],
     "frozen_layers and lower_from cut the network for internal replay"),
    (["strategy=bir", "generator=vae", "model=convnet", "strategy.plugins.bir.internal_replay=true",
      "strategy.plugins.bir.frozen_layers=3"], "replay of features models vectors"),
])
def test_bir_mistakes_fail_before_training(tmp_path, args, needle):
    with pytest.raises(ClrunError, match=re.escape(needle)):
        run(compose_cfg(*args, *FAST), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_internal_replay_freezes_the_conv_layers_and_replays_their_output(tmp_path, monkeypatch):
    frozen_states, replayed = [], []
    task_end, draw = BrainInspiredReplay.on_task_end, BrainInspiredReplay.draw_replay

    def record_end(self, loop, task):  # noqa: ANN001
        task_end(self, loop, task)
        frozen_states.append({k: v.clone() for k, v in self.lower.state_dict().items()})

    def record_draw(self, n):  # noqa: ANN001
        x, contexts = draw(self, n)
        replayed.append(tuple(x.shape))
        return x, contexts

    monkeypatch.setattr(BrainInspiredReplay, "on_task_end", record_end)
    monkeypatch.setattr(BrainInspiredReplay, "draw_replay", record_draw)
    cfg = compose_cfg("strategy=bir", "generator=vae", "generator.z_dim=8", "model=convnet",
                      "model.channels=[8,16]", "model.hidden_size=32", *FAST,
                      "scenario.n_tasks=2", "strategy.plugins.bir.internal_replay=true")
    result = run(cfg, tmp_path)
    assert len(result.matrix) == 2 and result.generative is None  # activations: no FID
    assert all(torch.equal(frozen_states[1][k], frozen_states[0][k]) for k in frozen_states[0])
    # the conv part's output: 16 channels of 2×2 after two poolings of the 8×8 digits
    assert replayed and {shape[1:] for shape in replayed} == {(16 * 2 * 2,)}
