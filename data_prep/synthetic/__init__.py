"""The synthetic image-text world: the embedded default data source (no internet needed)."""

from data_prep.synthetic.world import NOISE_KINDS, NoiseRates, WorldConfig, generate, plan_sample

__all__ = ["NOISE_KINDS", "NoiseRates", "WorldConfig", "generate", "plan_sample"]
