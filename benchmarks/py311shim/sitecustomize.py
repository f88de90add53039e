"""Let Debian 12's fence-agents 4.12.1 run on Python 3.11, the agents left untouched.

``fence_compute``/``fence_evacuate`` call ``inspect.getargspec``, which Python 3.11
removed (fixed upstream in ClusterLabs/fence-agents PR #620, ``getfullargspec``).
Put this directory on PYTHONPATH for the stock agent only; it puts back a
``getargspec`` with the old result shape, then runs Debian's own sitecustomize,
which this file shadows.
"""

import inspect
import os
import runpy
from collections import namedtuple

if not hasattr(inspect, "getargspec"):
    ArgSpec = namedtuple("ArgSpec", "args varargs keywords defaults")

    def getargspec(func):
        spec = inspect.getfullargspec(func)
        return ArgSpec(spec.args, spec.varargs, spec.varkw, spec.defaults)

    inspect.getargspec = getargspec

_DEBIAN = "/etc/python3.11/sitecustomize.py"
if os.path.exists(_DEBIAN):
    runpy.run_path(_DEBIAN, run_name="sitecustomize")
