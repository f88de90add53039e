"""Instances for the lab: flavors, images and servers pinned to a host, for tests,
benchmarks and the demo. Every call is plain openstacksdk against the lab's cloud."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

# Booting needs 2.37+ for networks="none"; 2.94 keeps evacuated servers ACTIVE (the engine's).
MICROVERSION = "2.94"


def flavor(conn: Any, name: str, *, ram: int = 64, vcpus: int = 1, disk: int = 1,
           extra_specs: Mapping[str, str] | None = None) -> Any:
    found = conn.compute.find_flavor(name)
    if found is None:
        found = conn.compute.create_flavor(name=name, ram=ram, vcpus=vcpus, disk=disk)
        if extra_specs:
            conn.compute.create_flavor_extra_specs(found, dict(extra_specs))
    return found


def image(conn: Any, name: str, **properties: str) -> Any:
    found = conn.image.find_image(name)
    if found is None:
        found = conn.image.create_image(name=name, data=b"\0" * 4096, disk_format="raw",
                                        container_format="bare", allow_duplicates=True,
                                        **properties)
    return found


def boot(conn: Any, host: str, count: int, *, prefix: str, image_id: str, flavor_id: str,
         metadata: Mapping[str, str] | None = None, parallel: int = 10) -> list[str]:
    """Create ``count`` servers on ``host`` (availability zone ``nova:<host>``); their ids."""

    def create(i: int) -> str:
        return conn.compute.create_server(
            name=f"{prefix}-{i:03d}", image_id=image_id, flavor_id=flavor_id, networks="none",
            availability_zone=f"nova:{host}", metadata=dict(metadata or {})).id

    with ThreadPoolExecutor(parallel) as pool:
        return list(pool.map(create, range(count)))


def servers(conn: Any, ids: Iterable[str] | None = None) -> dict[str, Any]:
    wanted = set(ids) if ids is not None else None
    return {s.id: s for s in conn.compute.servers(all_projects=True, details=True)
            if wanted is None or s.id in wanted}


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f}s")
        time.sleep(interval)


def wait_active(conn: Any, ids: Iterable[str], timeout: float = 300) -> dict[str, Any]:
    ids = set(ids)

    def ready() -> dict[str, Any] | None:
        now = servers(conn, ids)
        errors = sorted(s.name for s in now.values() if s.status == "ERROR")
        if errors:
            raise RuntimeError(f"servers in ERROR while booting: {errors}")
        return now if len(now) == len(ids) and all(s.status == "ACTIVE" for s in now.values()) \
            else None

    return wait_for(ready, timeout, f"{len(ids)} servers ACTIVE", 2)


def stop(conn: Any, ids: Iterable[str], timeout: float = 120) -> None:
    ids = set(ids)
    for sid in ids:
        conn.compute.stop_server(sid)
    wait_for(lambda: all(s.status == "SHUTOFF" for s in servers(conn, ids).values()),
             timeout, f"{len(ids)} servers SHUTOFF", 1)
