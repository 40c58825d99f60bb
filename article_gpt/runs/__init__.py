"""What a run leaves on disk, read and written in one place: the run record, metrics.json
(record.py), and run directories: which is a run, which is the latest, which is finished (dirs.py)."""
