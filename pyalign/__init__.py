"""pyalign: align language models with human preferences from one YAML config."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["AlignModel", "__version__"]


def __getattr__(name: str):
    # Importing the API pulls in torch and transformers; defer that until it is used, so that
    # `import pyalign` and `pyalign --help` stay fast.
    if name == "AlignModel":
        from pyalign.api import AlignModel

        return AlignModel
    raise AttributeError(f"module 'pyalign' has no attribute {name!r}")
