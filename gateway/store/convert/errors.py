"""The converter's single error type, kept in its own module so every part can raise it."""

from __future__ import annotations


class ConversionError(ValueError):
    """The source directory can't become a GGUF file; the message says why, for the API client."""
