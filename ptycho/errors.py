"""Exceptions raised by :mod:`ptycho`.

Every argument check of the package raises one of these, so a caller (and
the ``ptycho-patches`` command line) can tell a bad input from a bug:

- :class:`InputError` -- right kind of thing, wrong value (a ``ValueError``);
- :class:`InputTypeError` -- wrong kind of thing (a ``TypeError``, and an
  :class:`InputError`, so one ``except InputError`` catches both).

The command line maps :class:`InputError` to exit status 2 (usage error) and
anything else to exit status 1 with a one-line "internal error" message.
"""

from __future__ import annotations

__all__ = ["InputError", "InputTypeError"]


class InputError(ValueError):
    """A bad argument or input file: the message names it, what was expected and what came."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong kind (e.g. a string where an array was expected)."""
