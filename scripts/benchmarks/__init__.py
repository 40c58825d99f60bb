"""Subcommands of scripts/benchmark.py, one module each, over shared helpers in ``common``."""
