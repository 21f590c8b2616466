"""The exceptions diffkit raises. Every message is one line: what is wrong and what to do."""

from __future__ import annotations

from typing import Any


class DiffkitError(ValueError):
    """Base class of diffkit's errors (a ``ValueError``, so generic handlers still catch it)."""


class InputTypeError(DiffkitError, TypeError):
    """An argument has a type or dtype diffkit cannot differentiate (also a ``TypeError``)."""


class UnknownDifferentiatorError(DiffkitError, KeyError):
    """``dk.get`` was given a name that is not registered (also a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


class UnsupportedPrimitiveError(DiffkitError, NotImplementedError):
    """A differentiator met a jaxpr primitive that has no rule in its table."""


class GradCheckError(AssertionError):
    """A derivative disagrees with its reference (an ``AssertionError``, so pytest reports it
    as a test failure with the readable report as its message). ``report`` holds the gradient
    doctor's :class:`~diffkit.diagnosis.Diagnosis` when check_grads ran it (its first culprit
    ends the message), else None."""

    report: Any = None


class NonDifferentiableError(DiffkitError):
    """The checked point is (numerically) a kink: one-sided derivatives disagree."""
