"""The errors that stop a run before any heavy work, with exit status 2 and one line naming what is wrong."""


class ConfigError(ValueError):
    """A config value is invalid; the message names the field and what it accepts."""


class ModelUnavailableError(RuntimeError):
    """The configured real model cannot be loaded (no local copy, no Hub access, bad path)."""


class DataUnavailableError(RuntimeError):
    """A benchmark's datasets cannot be loaded (not in the local copy, or no Hub access and not cached)."""
