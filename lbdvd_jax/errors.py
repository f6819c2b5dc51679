"""The user-error classes: bad input to a public function, told apart from library bugs.

Every check of an argument, a file or an option raises `InputError` (or `InputTypeError` for a
wrong type) with a message that names the argument and the fix. They subclass `ValueError` and
`TypeError`, so callers that catch those keep working; the `lbdvd` command reports only these
(and OS errors on named paths) as one `lbdvd: error:` line, and lets any other exception, a bug,
show its traceback. A leaf module: it imports nothing from the package.
"""

__all__ = ["InputError", "InputTypeError"]


class InputError(ValueError):
    """A bad value given by the user (argument, file content, option); the message says the fix."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type; also a `TypeError`."""
