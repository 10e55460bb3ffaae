"""Stage entry points: `python -m pipelines.<stage> --help`."""
