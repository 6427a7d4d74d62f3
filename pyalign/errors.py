"""Exception types raised for bad user input.

Each subclasses the built-in type a Python user would catch (ValueError, KeyError), so library
callers need not import these, while the command line can tell a user's mistake (one line, no
traceback) from a bug.
"""


class PyAlignError(Exception):
    """Base class of errors caused by the user's config, data or paths."""


class ConfigError(PyAlignError, ValueError):
    """An invalid config: unknown key, wrong type, value out of range or missing key."""


class DataError(PyAlignError, ValueError):
    """A dataset that cannot be used as given: empty, malformed or with an invalid value."""


class MissingColumnError(PyAlignError, KeyError):
    """A column the trainer needs is absent from the dataset."""

    def __str__(self) -> str:
        # KeyError's str() quotes its argument; show the message as written.
        return str(self.args[0]) if self.args else ""


class ModelNotFoundError(PyAlignError, FileNotFoundError):
    """A base model path or id that cannot be found or loaded."""


class HubUploadError(PyAlignError, RuntimeError):
    """An upload to the Hugging Face hub that the hub rejected or that could not reach it."""
