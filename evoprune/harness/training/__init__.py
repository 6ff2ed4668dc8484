"""The trainer of the tiny models that answer (`model=tiny_llava_trained`, `model=tiny_llava_video_trained`);
``scripts/train_tiny.py`` parses its arguments and calls `trainer.train`. May import ``common``, ``data``,
``models`` and ``inference``."""
