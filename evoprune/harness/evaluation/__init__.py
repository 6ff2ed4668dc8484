"""A run end to end and sweeps: config checks, the runner, lmms-eval's model class and CLI entry point,
experiment cells and their preflight. May import every other part."""
