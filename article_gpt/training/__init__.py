"""One run: validate, claim cores, build, fit, close (run.py); the LightningModule, the Trainer,
compute budgets, Optuna pruning, and the Hydra guards a single run starts behind."""
