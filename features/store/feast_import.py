"""Import Feast without importing torch (the `features` layer never loads torch).

Feast 0.67 imports torch eagerly in `feast.torch_wrapper` only to offer `to_tensor()`; we never
call it. A stand-in module that imports torch on first use keeps `import feast` torch-free (and
about 1.3 s faster) while `get_torch()` still works for anyone who needs it.

Example (the stand-in `import_feast()` puts in place; importing Feast itself takes seconds, the tests do it):
    >>> wrapper = _lazy_torch_wrapper()
    >>> wrapper.__name__, wrapper.TORCH_AVAILABLE, callable(wrapper.get_torch)   # torch is imported on first call only
    ('feast.torch_wrapper', True, True)
"""

from __future__ import annotations

import importlib
import sys
import types


def _lazy_torch_wrapper() -> types.ModuleType:
    mod = types.ModuleType("feast.torch_wrapper")
    mod.TORCH_AVAILABLE = importlib.util.find_spec("torch") is not None

    def get_torch():
        return importlib.import_module("torch")

    mod.get_torch = get_torch
    return mod


def import_feast():
    """Return the `feast` module, imported with the lazy torch wrapper in place."""
    if "feast" not in sys.modules and "feast.torch_wrapper" not in sys.modules:
        sys.modules["feast.torch_wrapper"] = _lazy_torch_wrapper()
    import feast

    return feast
