"""One exception hierarchy for vlinterp.

Every error a user can cause (bad image, bad prompt, unknown hook site, out-of-range
layer, mismatched shapes, unloadable model) is a subclass of :class:`VlinterpError`,
raised early, in our own words, naming the argument at fault.
"""
from __future__ import annotations

import difflib
from typing import Iterable


class VlinterpError(Exception):
    """Base class of every error vlinterp raises on purpose."""


class ImageError(VlinterpError, ValueError):
    """An image could not be read, or has a mode or size vlinterp cannot use."""


class PromptError(VlinterpError, ValueError):
    """A prompt is malformed: e.g. images given but the prompt has no image placeholder."""


class ImageTokenMismatchError(PromptError):
    """The number of image placeholders differs from the number of images / image features."""


class UnknownSiteError(VlinterpError, KeyError):
    """A hook-site name (or wildcard) matches no site of the adapter."""

    def __init__(self, name: str, valid: Iterable[str]):
        valid = list(valid)
        near = difflib.get_close_matches(name, valid, n=5, cutoff=0.4)
        msg = f"unknown hook site {name!r}"
        if near:
            msg += f"; nearest valid sites: {', '.join(near)}"
        else:
            msg += f"; valid sites look like: {', '.join(valid[:6])}"
        self.name, self.nearest = name, near
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class LayerRangeError(VlinterpError, IndexError):
    """A layer index is outside the model's range."""


class LoadError(VlinterpError, OSError):
    """A model name or path could not be resolved or loaded."""


class ShapeMismatchError(VlinterpError, ValueError):
    """A tensor (scores, SAE width, edit result) has the wrong shape for where it is used."""


class LayoutError(VlinterpError, ValueError):
    """A token-layout query is invalid (unknown span, image index out of range...)."""


class UnsupportedError(VlinterpError, NotImplementedError):
    """The adapter's model family does not support this operation (e.g. generate on a ViT)."""


class NaNError(VlinterpError, FloatingPointError):
    """NaN or Inf values were found where finite values are required."""


class BackboneMismatchError(VlinterpError, ValueError):
    """A head (prototypes, probe) trained on one backbone or site is used with another."""


class UnknownNameError(VlinterpError, KeyError):
    """A name that no registry entry has (method, pruner, corruption, dataset format...)."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        known = list(known)
        near = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
        msg = f"unknown {kind} {name!r}; " + (f"did you mean {', '.join(near)}? known: " if near else "known: ") + ", ".join(known)
        self.kind, self.name, self.known, self.nearest = kind, name, known, near
        super().__init__(msg)

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class ConfigError(VlinterpError, ValueError):
    """A method option is unknown, of the wrong type or out of range."""


class ArgumentError(VlinterpError, ValueError):
    """A value given to a vlinterp function is outside what it accepts (an unknown choice, a
    count out of range, an empty list)."""


class UsageError(VlinterpError, ValueError):
    """A command-line argument (or a combination of them) cannot be used."""


class DataError(VlinterpError, ValueError):
    """A dataset file or record is missing, malformed or inconsistent (names the file and record)."""


class OutputError(VlinterpError, OSError):
    """An output path cannot be written without harming what is there (a file or a non-empty
    directory vlinterp did not write, a file where a directory is needed, or the reverse)."""


class VlinterpWarning(UserWarning):
    """Something the user should know that is not an error (an image cropped by the processor, a
    comparison view skipped); the CLI prints each as one ``warning:`` line."""


class InputTooLargeError(UsageError):
    """An input over a size limit (an upload to ``vlinterp serve`` larger than ``--max-upload``)."""
