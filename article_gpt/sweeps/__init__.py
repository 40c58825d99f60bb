"""Many runs: records read from disk, the summary and its picture, and the Hydra callbacks."""
