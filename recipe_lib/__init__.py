"""plausibility-recipes: score, measure and improve a video physics critic.

Importing this package is cheap: heavy libraries (torch, transformers, datasets, vllm, cosmos-rl) are imported
inside the functions that need them.
"""

__version__ = "0.1.0"
