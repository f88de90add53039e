"""The fence agent ``fence_nova`` and the fence-agents protocol it speaks.

* ``protocol``: the fence-agents protocol for any agent -- options and actions
  declared as data, stdin ``key=value`` and argv parsing, ``metadata`` XML,
  validation, secrets from scripts or files, exit codes, :func:`run`.
* ``fence_nova``: the declared interface of ``fence_nova`` (every parameter of
  fence-agents' ``fence_compute``, plus the cloud and power-driver ones) and
  its entry point.

Importing this package must stay cheap: no openstacksdk, keystoneauth1 or
pyghmi at import time, so ``fence_nova -o metadata`` answers at once.
"""
