"""vortex-rl: GRPO training for reasoning LLMs with block-sparse decode attention in the rollouts."""

__version__ = "0.1.0"
