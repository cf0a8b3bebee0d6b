"""The one exception type users see.

Anything raised as `EdgeaeError` is a problem with the user's input or files; the CLI
prints its message on one line and exits non-zero, without a traceback.
"""


class EdgeaeError(Exception):
    """A user-facing problem: bad data, a bad recipe, a corrupted or mismatched model."""
