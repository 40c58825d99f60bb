"""The process a job runs in: its share of the cores and torch threads (cores.py), DDP ranks (ddp.py)."""
