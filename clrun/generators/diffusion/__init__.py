"""Denoising diffusion generators (`generator=diffusion`).

A denoiser predicts the noise ε added to an image (or a feature vector) at a diffusion step:
trained as in DDPM (1000 steps, linear β, ε-prediction, MSE), sampled with DDIM (η = 0, so a
seed fixes a sample). Images use diffusers' `UNet2DModel` built from config (never downloaded);
vectors a small MLP. An exponential moving average of the weights samples and is replayed.
Sampling can be steered by a classifier (`sampling.Guidance`), as GUIDE does, and a frozen
previous model can be distilled into the current one (`DiffusionGenerator.distillation_loss`).
"""

from clrun.generators.diffusion.generator import DiffusionGenerator

__all__ = ["DiffusionGenerator"]
