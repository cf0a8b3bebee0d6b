"""The one exception type users see.

Anything raised as `EdgeaeError` is a problem with the user's input or files; the CLI
prints its message on one line and exits non-zero, without a traceback.
"""

import re
from pathlib import Path


class EdgeaeError(Exception):
    """A user-facing problem: bad data, a bad recipe, a corrupted or mismatched model."""


def require(module: str, extra: str):
    """Import an optional dependency, or raise an `EdgeaeError` naming the extra that installs it."""
    from importlib import import_module

    try:
        return import_module(module)
    except ImportError as e:
        raise EdgeaeError(f"this command needs the {extra} extra ({e.name} is not installed): pip install 'edgeae[{extra}]'") from None


def existing_file(path, what: str = "file") -> Path:
    """`path` as a Path if it is a file, else an `EdgeaeError`: "<path>: no such <what>", or
    "<path>: a folder, not a <what>"."""
    path = Path(path)
    if not path.is_file():
        raise EdgeaeError(f"{path}: a folder, not a {what}" if path.is_dir() else f"{path}: no such {what}")
    return path


def cause(e: Exception) -> str:
    """A library's exception as "<type>: <first sentence>", for the parentheses of a one-line
    error: Keras' loaders append paragraphs of advice that do not fit on a line, and a cut at a
    fixed length ends mid-word. Keras 3 wraps the error that matters ("Could not locate class
    'MyLayer'") after "Exception encountered:" in one that says only what failed to load."""
    text = str(e).rsplit("Exception encountered:", 1)[-1].strip()
    first = text.splitlines()[0] if text else ""
    first = re.split(r"(?<=[.!?])\s", first, maxsplit=1)[0]
    if len(first) > 200:
        first = first[:200].rsplit(" ", 1)[0] + " ..."
    return f"{e.__class__.__name__}: {first}" if first else e.__class__.__name__
