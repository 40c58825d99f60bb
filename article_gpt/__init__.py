"""Article GPT: small GPT language models trained on a writer's own articles."""

__version__ = "0.1.0"
