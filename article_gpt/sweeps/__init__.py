"""Many runs: their records read from disk, the summary and its pictures, the Optuna sweeper and
its search space, and the Hydra callback that writes the summary when a sweep ends."""
