"""The GPU check's steps (run through scripts/gpu_check.sh): each step a fresh process with its
own timeout, in order of value; each appends one line `PASS|FAIL|TIMEOUT step seconds detail`
to the summary file and stdout the moment it ends, so a killed check keeps what finished.

Steps: versions; split Fashion-MNIST naive on the accelerator in fp32 and bf16-mixed with
training steps per second beside a bare PyTorch loop on the same protocol (MLP 784-32-10,
batch 32, Adam: per-step cost shows); then a two-task smoke of every family (regularization,
replay, gradient surgery, generative replay, a generator as the learner, architectural,
interval) on the bundled digits, each its own process and line, after the default diffusion
model's cost per training step. `--cpu` runs the same steps on
the CPU with tiny budgets (CI runs it, so the script cannot rot).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FMNIST = Path(os.environ.get("FMNIST_DIR", "/usr/share/datasets/fashion-mnist"))
TINY = ["scenario=split_fmnist", f"data_dir={FMNIST}", "scenario.setting=class",
        "model.hidden_sizes=[32]", "optimizer=adam", "train.batch_size=32",
        "train.drop_last=true", "logger=none", "trainer.enable_progress_bar=false",
        "checkpoint=false"]
# (job name, overrides): every family on the bundled digits, two tasks
FAMILIES = [
    ("ewc", ["strategy=ewc"]),
    ("si_lwf", ["strategy=[si,lwf]"]),
    ("er", ["strategy=er"]),
    ("agem", ["strategy=agem"]),
    ("icarl", ["strategy=icarl"]),
    ("dgr_vae", ["strategy=dgr", "generator=vae", "metrics.prd.runs=1"]),
    ("rtf", ["strategy=rtf", "generator=vae", "metrics.generative=false"]),
    ("guide", ["strategy=guide", "generator=diffusion", "generator.block_channels=[8,16]",
               "generator.sample_steps=3", "strategy.plugins.guide.regenerate_every=8",
               "metrics.prd.runs=1", "metrics.samples_per_task=40"]),
    ("feature_replay", ["strategy=feature_replay", "generator=diffusion",
                        "generator.sample_steps=3"]),
    ("binplay", ["strategy=binplay", "generator=binary_ae", "generator.architecture=fc",
                 "generator.hidden_sizes=[64]", "generator.latent_size=32",
                 "generator.pretrain_epochs=1", "generator.code_warmup_epochs=1",
                 "generator.decoder_epochs=1", "metrics.generative=false"]),
    ("multiband", ["objective=generative", "strategy=multiband", "generator=multiband_vae",
                   "generator.local_epochs=1", "generator.global_epochs=1",
                   "generator.warmup_epochs=0", "metrics.prd.runs=1"]),
    ("pnn", ["strategy=pnn", "scenario.setting=task"]),
    ("supsup", ["strategy=supsup"]),
    ("hnet", ["strategy=hnet"]),
    ("interval", ["strategy=interval", "model=interval_mlp", "trainer.max_epochs=3",
                  "strategy.plugins.interval.contraction_epochs=1"]),
]


@dataclass
class Check:
    """Where the summary goes and which device and budgets the steps use."""

    out: Path
    cpu: bool
    python: str = sys.executable
    lines: list[str] = field(default_factory=list)

    @property
    def trainer(self) -> list[str]:
        return ["trainer=cpu"] if self.cpu else ["trainer=gpu"]

    def report(self, status: str, step: str, seconds: float, detail: str) -> None:
        line = f"{status:7s} {step:24s} {seconds:6.1f}s  {detail}"
        print(line, flush=True)
        with (self.out / "summary.txt").open("a") as summary:
            summary.write(line + "\n")

    def run(self, step: str, command: list[str], timeout: float) -> tuple[str, float, str]:
        """Run one step's process; its output goes to `<step>.log`. Returns the status, the
        seconds it took and the last lines of its log (for FAIL and TIMEOUT)."""
        log = self.out / f"{step}.log"
        env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled"}
        start = time.perf_counter()
        with log.open("w") as handle:
            process = subprocess.Popen(command, cwd=self.out, env=env, stdout=handle,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            try:
                status = "PASS" if process.wait(timeout=timeout) == 0 else "FAIL"
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait()
                status = "TIMEOUT"
        seconds = time.perf_counter() - start
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        return status, seconds, tail

    def clrun(self, *args: str) -> list[str]:
        return [self.python, "-m", "clrun.cli", *args]


def versions(check: Check) -> None:
    code = ("import torch, pytorch_lightning as pl, hydra, omegaconf;"
            "gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none';"
            "print(f'torch {torch.__version__} cuda {torch.version.cuda} lightning "
            "{pl.__version__} hydra {hydra.__version__} omegaconf {omegaconf.__version__} "
            "gpu {gpu}')")
    status, seconds, tail = check.run("versions", [check.python, "-c", code], 120)
    check.report(status, "versions", seconds, tail)


def steps_per_second(run_dir: Path, steps: int) -> str:
    seconds = json.loads((run_dir / "timing.json").read_text())["train_eval_seconds"]
    acc = json.loads((run_dir / "metrics.json").read_text())["acc"]
    return f"ACC {acc:.2f}, {steps / seconds:.0f} steps/s ({steps} steps in {seconds:.1f} s)"


def speed(check: Check, precision: str) -> None:
    """clrun naive and the bare loop on the tiny protocol, at one precision."""
    epochs = 1
    steps = 5 * (12000 // 32) * epochs
    budget = ["trainer.max_epochs=1"] if not check.cpu else [
        "trainer.max_epochs=-1", "trainer.max_steps=40"]
    if check.cpu:
        steps = 5 * 40
    name = f"clrun-naive-{precision}"
    run_dir = check.out / name
    status, seconds, tail = check.run(name, check.clrun(
        *TINY, *check.trainer, f"trainer.precision={precision}", *budget,
        f"hydra.run.dir={run_dir}"), 120)
    check.report(status, name, seconds,
                 steps_per_second(run_dir, steps) if status == "PASS" else tail)
    bare = [check.python, str(REPO / "scripts" / "bare_loop.py"), "--hidden", "32",
            "--optimizer", "adam", "--batch-size", "32", "--epochs", str(epochs),
            "--device", "cpu" if check.cpu else "cuda"]
    if precision.startswith("bf16"):
        bare.append("--bf16")
    name = f"bare-naive-{precision}"
    if check.cpu:
        check.report("SKIP", name, 0.0, "the bare loop runs whole epochs; --cpu skips it")
        return
    status, seconds, tail = check.run(name, bare, 90)
    detail = tail
    if status == "PASS":
        loop = float(tail.split("train+eval seconds: ")[1].split()[0])
        detail = f"{steps / loop:.0f} steps/s ({steps} steps in {loop:.1f} s)"
    check.report(status, name, seconds, detail)


def diffusion_cost(check: Check) -> None:
    """What the default diffusion model costs per training step of 64 split Fashion-MNIST
    images (generator=diffusion, 0.27 M parameters), from timing.json's split."""
    steps = 10 if check.cpu else 200
    run_dir = check.out / "diffusion"
    status, seconds, tail = check.run("diffusion-cost", check.clrun(
        *check.trainer, *TINY, "strategy=dgr", "generator=diffusion", "scenario.n_tasks=2",
        "generator.batch_size=64", f"generator.max_steps={steps}", "trainer.max_epochs=-1",
        "trainer.max_steps=10", "generator.sample_steps=10", "metrics.generative=false",
        "strategy.plugins.dgr.replay_buffer_per_class=20", f"hydra.run.dir={run_dir}"),
        240 if check.cpu else 180)
    detail = tail
    if status == "PASS":
        split = json.loads((run_dir / "timing.json").read_text())["seconds_per_task"]
        first, later = split[0]["generator_training"], split[1]["generator_training"]
        detail = (f"{first / steps:.3f} s/step on task 0, {later / steps:.3f} s/step with "
                  "self-replay (task 1)")
    check.report(status, "diffusion-cost", seconds, detail)


def families(check: Check) -> None:
    """A two-task smoke of every family, each its own process and line (bf16 on the GPU)."""
    budget = ["trainer.max_epochs=1"] if not check.cpu else [
        "trainer.max_epochs=-1", "trainer.max_steps=5", "metrics.feature_net.steps=50"]
    precision = "32-true" if check.cpu else "bf16-mixed"
    for name, overrides in FAMILIES:
        if name == "interval":  # its phases need whole epochs
            budget = [o for o in budget if not o.startswith("trainer.")]
        run_dir = check.out / "families" / name
        step = f"family-{name}"
        status, seconds, tail = check.run(step, check.clrun(
            *check.trainer, f"trainer.precision={precision}", "scenario.n_tasks=2",
            "logger=none", "checkpoint=false", "trainer.enable_progress_bar=false", *budget,
            *overrides, f"hydra.run.dir={run_dir}"), 60 if check.cpu else 45)
        detail = tail
        if status == "PASS":
            result = json.loads((run_dir / "metrics.json").read_text())
            detail = (f"ACC {result['acc']:.2f}" if result.get("acc") is not None
                      else f"FID {result['fid']:.1f}")
        check.report(status, step, seconds, detail)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cpu", action="store_true", help="the same steps on the CPU, tiny")
    parser.add_argument("--out", default=os.environ.get("OUT", "/tmp/clrun-gpu-check"))
    args = parser.parse_args()
    check = Check(Path(args.out).resolve(), args.cpu)
    check.out.mkdir(parents=True, exist_ok=True)
    (check.out / "summary.txt").write_text("")
    start = time.perf_counter()
    versions(check)
    speed(check, "32-true")
    speed(check, "bf16-mixed")
    diffusion_cost(check)
    families(check)
    failed = [line for line in (check.out / "summary.txt").read_text().splitlines()
              if line.startswith(("FAIL", "TIMEOUT"))]
    print(f"gpu_check: {len(failed)} step(s) failed, {time.perf_counter() - start:.0f} s; "
          f"summary in {check.out / 'summary.txt'}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
