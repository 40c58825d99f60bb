"""What a run measures and reports while and after it trains: loss curves and files (recorder.py),
W&B and the other loggers (loggers.py), MFU (mfu.py), the console lines (report.py)."""
