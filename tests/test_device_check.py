"""`check_devices=true`: device mistakes found on the CPU, over every family and generator, and
the check fails on planted mistakes (so it is not a check that cannot fail)."""

from __future__ import annotations

import pytest
import torch

from clrun.device_check import DeviceMistake, VirtualDevice
from clrun.run import run
from tests.conftest import STRATEGY_OVERRIDES, TINY_DIFFUSION, compose_cfg

SMOKE = ("check_devices=true", "scenario.n_tasks=2", "trainer.max_epochs=1", "logger=none",
         "checkpoint=false", "metrics.prd.runs=1", "metrics.feature_net.steps=20")
# a two-task smoke of every family and generator
FAMILIES = {
    "naive": [], "ewc": ["strategy=ewc"], "oewc": ["strategy=oewc"],
    "si_lwf": ["strategy=[si,lwf]"], "mas": ["strategy=mas"], "er": ["strategy=er"],
    "mir": ["strategy=mir"],
    "gem": ["strategy=gem"], "agem": ["strategy=agem"], "icarl": ["strategy=icarl"],
    "gdumb": ["strategy=gdumb"], "latent_replay": ["strategy=latent_replay",
                                                  *STRATEGY_OVERRIDES["latent_replay"]],
    "dgr_vae": ["strategy=dgr", "generator=vae"], "dgr_gan": ["strategy=dgr", "generator=gan",
                                                              "trainer.max_steps=10"],
    "dgr_distill": ["strategy=dgr_distill", *STRATEGY_OVERRIDES["dgr_distill"]],
    "dgr_diffusion": ["strategy=dgr", *TINY_DIFFUSION,
                      "strategy.plugins.dgr.generator_replay=distill"],
    "guide": ["strategy=guide", *STRATEGY_OVERRIDES["guide"]],
    "feature_replay": ["strategy=feature_replay", *STRATEGY_OVERRIDES["feature_replay"]],
    "rtf": ["strategy=rtf", "generator=vae"], "bir": ["strategy=bir", "generator=vae"],
    "binplay": ["strategy=binplay", *STRATEGY_OVERRIDES["binplay"]],
    "multiband": ["objective=generative", "strategy=multiband", "generator=multiband_vae",
                  "generator.local_epochs=1", "generator.global_epochs=1",
                  "generator.warmup_epochs=0"],
    "logcl": ["objective=generative", "strategy=logcl", "generator=vae"],
    "pnn_abc": ["objective=generative", "strategy=pnn_abc", "generator=progressive_vae"],
    "pnn": ["strategy=pnn", "scenario.setting=task"],
    "piggyback": ["strategy=piggyback", "scenario.setting=task"],
    "supsup": ["strategy=supsup"], "hnet": ["strategy=hnet"],
    "interval": ["strategy=interval", *STRATEGY_OVERRIDES["interval"]],
}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_family_keeps_its_tensors_on_the_device(tmp_path, family):
    """Slow (~25 s for all): two-task runs with every torch call checked in Python."""
    result = run(compose_cfg(*SMOKE, *FAMILIES[family]), tmp_path)
    assert result.matrix or result.generative


@pytest.mark.parametrize("plugin,needle", [
    ("HostBuffer", "mul mixes a host tensor"),
    ("StepSync", r"item\(\) reads a device tensor on the host inside a training step"),
])
def test_a_planted_mistake_fails_the_run_naming_its_line(tmp_path, monkeypatch, plugin, needle):
    monkeypatch.setenv("CLRUN_ALLOWED_TARGETS", "tests.example_plugin")
    cfg = compose_cfg(*SMOKE, f"+strategy.plugins.bad._target_=tests.example_plugin."
                              f"device_mistakes.{plugin}")
    with pytest.raises(DeviceMistake, match=needle) as failed:
        run(cfg, tmp_path)
    assert "tests/example_plugin/device_mistakes.py" in str(failed.value)
    without = compose_cfg(*SMOKE[1:], f"+strategy.plugins.bad._target_=tests.example_plugin."
                                      f"device_mistakes.{plugin}")
    assert run(without, tmp_path / "unchecked").matrix  # on a CPU it passes unnoticed


def test_the_virtual_device_follows_tensors_through_operations():
    with VirtualDevice() as mode:
        device_data = torch.randn(4, 3).to("cpu", copy=True)  # moved to the (CPU) device
        host = torch.zeros(3)
        moved = host.to("cpu", copy=True)
        assert mode.is_host(host) and not mode.is_host(moved) and not mode.is_host(device_data)
        assert mode.tag(torch.randn(2, device="cpu")) == "device"  # made with device=
        assert not mode.is_host(device_data + moved) and mode.is_host(host * 2)
        assert not mode.is_host(torch.zeros_like(device_data))
        assert mode.is_host(torch.ones(2, device=host.device))  # made where a host tensor is
        device_data + torch.tensor(1.0)  # a 0-dim host tensor is allowed, as CUDA allows it
        device_data[torch.tensor([0, 1])]  # host indices are allowed
        with pytest.raises(DeviceMistake, match="add mixes"):
            device_data + host
        mode.failed = False  # after a mistake the check stands down while the run unwinds
        with pytest.raises(DeviceMistake, match="host tensor is indexed by device indices"):
            host[torch.tensor([0, 1], device="cpu")]  # CUDA refuses device indices of host data
        mode.failed = False
        mode.in_step = True
        host.sum().item()  # reading a host tensor costs no synchronisation
        with pytest.raises(DeviceMistake, match="item"):
            device_data.sum().item()
