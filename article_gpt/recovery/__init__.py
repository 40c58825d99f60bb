"""Starting where a run already is: the start rule (resume.py), resume= before Hydra (argv.py),
signals (signals.py) and atomic, resumable checkpoints (checkpoint_io.py)."""
