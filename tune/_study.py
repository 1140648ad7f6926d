"""Compatibility shim: the library part of ``tune/sweep.py`` now lives in the package ``tune/study/``.

``import _study`` (with ``tune/`` on ``sys.path``, as ``tune/sweep.py`` and ``tests/test_tune_sweep.py`` do) gives
every public name of ``study`` under the old module name. New code should ``import study``.
"""

from study import *  # noqa: F401,F403  (the package's __all__ is the one list of public names)
from study import __all__  # noqa: F401
