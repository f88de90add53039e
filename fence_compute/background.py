"""A call run in a daemon thread: ``off`` reads Nova (authenticating to Keystone on the way)
while the BMC powers the host off (:func:`fence_compute.actions.off`).

Not a ``concurrent.futures.ThreadPoolExecutor``: Python joins its worker threads at exit, so
a Keystone that never answers would hold up the exit of a fence that was refused or whose
power-off failed, and Pacemaker waits for the agent. A daemon thread is abandoned at exit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar, cast

T = TypeVar("T")


class Background(Generic[T]):
    """``fn()`` started in a daemon thread named ``name``. Its exception is kept for
    :meth:`result`: nothing is raised, or logged, unless the caller asks for the answer."""

    def __init__(self, fn: Callable[[], T], name: str) -> None:
        self._ended = threading.Event()
        self._value: T | None = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, args=(fn,), name=name, daemon=True).start()

    def _run(self, fn: Callable[[], T]) -> None:
        try:
            self._value = fn()
        except BaseException as exc:  # raised by result(), in the thread that needs it
            self._error = exc
        finally:
            self._ended.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Whether ``fn`` has ended, waiting for it up to ``timeout`` seconds (None: until
        it has)."""
        return self._ended.wait(timeout)

    def result(self) -> T:
        """``fn``'s answer, or its exception raised here; waits until ``fn`` has ended."""
        self._ended.wait()
        if self._error is not None:
            raise self._error
        return cast(T, self._value)
