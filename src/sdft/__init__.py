"""SDFT: Self-Distillation Fine-Tuning for chat language models.

As a library: `sdft.distill(model, data, task=...)` returns the distilled set as a datasets.Dataset and
`sdft.evaluate(model, suites=...)` the metrics (sdft.api). Importing sdft loads none of the heavy
libraries: they load when one of these is called.
"""

import importlib
import types

__version__ = "0.1.0"
__all__ = ["distill", "evaluate", "api", "__version__"]

# `sdft.distill` and `sdft.evaluate` are also the names of the subpackages of those stages, and Python
# binds a subpackage to its name as soon as anything imports a module in it. So the two subpackages are
# made callable: calling one runs the sdft.api function of its name, and `sdft.distill.stage` stays the
# module it is.
API_PACKAGES = ("distill", "evaluate")


class CallablePackage(types.ModuleType):
    """A subpackage that, called, runs the sdft.api function of the same name."""

    def __call__(self, *args, **kwargs):
        from sdft import api

        return getattr(api, self.__name__.rpartition(".")[2])(*args, **kwargs)


def api_package(name: str) -> types.ModuleType:
    """The subpackage `sdft.<name>` (its __init__ imports nothing heavy), made callable."""
    module = importlib.import_module(f"{__name__}.{name}")
    if not isinstance(module, CallablePackage):
        module.__class__ = CallablePackage
    return module


for _name in API_PACKAGES:
    api_package(_name)


def __getattr__(name: str):
    # sdft.api and what it pulls in (datasets, transformers) load only when asked for.
    if name == "api":
        return importlib.import_module(f"{__name__}.api")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
