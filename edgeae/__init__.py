"""edgeae: autoencoders from training to a microcontroller and back.

The public API, imported lazily so that the runtime half never loads TensorFlow:

    train(recipe, data, out)            edgeae.train     (needs edgeae[train]; data: a file, a folder, a list)
    export(run_or_model, out)           edgeae.export    (needs edgeae[train])
    verify(export_dir, data=None)       edgeae.verify
    load_recipe(path), read_series(path), windows(series, length, hop), Normalizer
    Export.open(dir), Model(tflite)     manifest / runtime
    Host(export_dir).read(packets)      the host half: packets -> reconstructions, scores
    Hosts([dir, ...])                   the same for several exports, by each packet's model id
    simulate.machine(...)               the embedded default data
"""

import sys
import types
from importlib import import_module

from .errors import EdgeaeError

__version__ = "0.1.0"

_API = {
    "train": ("train", "train"),
    "export": ("export", "export"),
    "split": ("export", "split"),
    "verify": ("verify", "verify"),
    "Floors": ("verify", "Floors"),
    "load_recipe": ("recipe", "load"),
    "Recipe": ("recipe", "Recipe"),
    "read_series": ("data", "read_series"),
    "Series": ("data", "Series"),
    "windows": ("data", "windows"),
    "Normalizer": ("data", "Normalizer"),
    "Export": ("manifest", "Export"),
    "Model": ("runtime", "Model"),
    "Host": ("host", "Host"),
    "Hosts": ("host", "Hosts"),
}

_MODULES = ("simulate", "zoo", "metrics", "runtime", "data", "recipe", "demo", "pruning", "quantize")


def __getattr__(name):
    if name in _API:
        module, attr = _API[name]
        globals()[name] = value = getattr(import_module(f".{module}", __name__), attr)
        return value
    if name in _MODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'edgeae' has no attribute {name!r}")


def __dir__():
    """The public names, loaded or not (for tab completion), without the helpers imported here."""
    return sorted({*__all__, *_MODULES, "__version__"})


class _Package(types.ModuleType):
    """`edgeae.train`, `.export` and `.verify` are functions named like the modules that hold them.
    Importing such a module binds it to the package name (Python does so on first import), which
    made `edgeae.verify(...)` a call of a module once anything had imported edgeae.verify. This
    keeps the function there."""

    def __setattr__(self, name, value):
        if not (name in _API and isinstance(value, types.ModuleType)):
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

__all__ = ["EdgeaeError", *_API]
