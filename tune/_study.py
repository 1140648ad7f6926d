"""Every public name of the package ``tune/study/`` (the library part of ``tune/sweep.py``) under the name ``_study``.

``import _study`` works with ``tune/`` on ``sys.path``, as ``tests/test_tune_sweep.py`` has it. New code should
``import study``.
"""

from study import *  # noqa: F401,F403  (the package's __all__ is the one list of public names)
from study import __all__  # noqa: F401
