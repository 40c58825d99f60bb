"""One run: the LightningModule, the run itself (validate, build, fit), its files and its trackers."""
