"""The few Keystone and Nova REST calls the lab itself makes (catalog, readiness, reset).

Standard library only, so the lab runs under any interpreter (the suite's venv, the system
python) and its CLI starts fast; the tests use openstacksdk through ``OpenStackLab.connection()``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from lab.openstack_config import ADMIN_PASSWORD, REGION, SERVICE_PASSWORD, Layout

# Force-down by service id needs 2.53; everything the lab does works there.
MICROVERSION = "2.53"


class RestError(RuntimeError):
    def __init__(self, status: int, method: str, url: str, body: str) -> None:
        super().__init__(f"{method} {url}: {status} {body[:300]}")
        self.status = status


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of GET url, or None if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (our own URL)
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


class Rest:
    """An admin client: one password token (renewed on 401), JSON in and out."""

    def __init__(self, lay: Layout) -> None:
        self.lay = lay
        self._token: str | None = None

    def _raw(self, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None,
             timeout: float = 30) -> tuple[int, dict[str, str], Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)  # noqa: S310
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310
                text = resp.read().decode()
                return resp.status, dict(resp.headers), json.loads(text) if text else None
        except urllib.error.HTTPError as exc:
            raise RestError(exc.code, method, url, exc.read().decode(errors="replace")) from None

    def token(self) -> str:
        if self._token is None:
            body = {"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}}},
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}}
            _, headers, _ = self._raw("POST", self.lay.url("keystone", "/v3/auth/tokens"), body)
            self._token = headers["X-Subject-Token"]
        return self._token

    def call(self, method: str, service: str, path: str, body: Any = None,
             microversion: str | None = MICROVERSION) -> Any:
        url = self.lay.url(service, ("/v2.1" if service == "nova-api" else "") + path)
        headers = {}
        if microversion and service == "nova-api":
            headers["OpenStack-API-Version"] = f"compute {microversion}"
        elif microversion and service == "placement":
            headers["OpenStack-API-Version"] = f"placement {microversion}"
        for attempt in (1, 2):
            headers["X-Auth-Token"] = self.token()
            try:
                return self._raw(method, url, body, headers)[2]
            except RestError as exc:
                if exc.status != 401 or attempt == 2:
                    raise
                self._token = None
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ keystone catalog

    def _find_or_create(self, kind: str, name: str, body: dict[str, Any]) -> str:
        found = self.call("GET", "keystone", f"/v3/{kind}s?name={name}")[f"{kind}s"]
        if found:
            return str(found[0]["id"])
        return str(self.call("POST", "keystone", f"/v3/{kind}s", {kind: body})[kind]["id"])

    def create_catalog(self) -> None:
        """Service entries with public/internal/admin endpoints, project ``service``, and the
        service users nova, glance and placement with roles admin and service there. Idempotent."""
        services = (("nova", "compute", "nova-api", "/v2.1"), ("placement", "placement",
                    "placement", ""), ("glance", "image", "glance", ""),
                    ("neutron", "network", "neutron", ""))
        endpoints = self.call("GET", "keystone", "/v3/endpoints")["endpoints"]
        for name, stype, port_name, suffix in services:
            sid = self._find_or_create("service", name, {"name": name, "type": stype})
            for iface in ("public", "internal", "admin"):
                if not any(e["service_id"] == sid and e["interface"] == iface for e in endpoints):
                    self.call("POST", "keystone", "/v3/endpoints", {"endpoint": {
                        "service_id": sid, "interface": iface, "region_id": REGION,
                        "url": self.lay.url(port_name, suffix)}})
        project = self._find_or_create("project", "service", {"name": "service",
                                                              "domain_id": "default"})
        roles = [self._find_or_create("role", r, {"name": r}) for r in ("admin", "service")]
        for user in ("nova", "glance", "placement"):
            uid = self._find_or_create("user", user, {
                "name": user, "password": SERVICE_PASSWORD, "domain_id": "default"})
            for role in roles:
                self.call("PUT", "keystone", f"/v3/projects/{project}/users/{uid}/roles/{role}")

    # ------------------------------------------------------------------ nova

    def compute_services(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "nova-api", "/os-services?binary=nova-compute")["services"])

    def hypervisor_hosts(self) -> set[str]:
        hvs = self.call("GET", "nova-api", "/os-hypervisors/detail")["hypervisors"]
        return {hv["service"]["host"] for hv in hvs}

    def servers(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "nova-api", "/servers?all_tenants=1")["servers"])

    def providers_disabled(self) -> set[str]:
        """Names of the resource providers carrying COMPUTE_STATUS_DISABLED: the scheduler
        places nothing there (Placement 1.18 filters on required traits)."""
        body = self.call("GET", "placement",
                         "/resource_providers?required=COMPUTE_STATUS_DISABLED",
                         microversion="1.18")
        return {rp["name"] for rp in body["resource_providers"]}

    def update_service(self, service_id: str, **changes: Any) -> None:
        self.call("PUT", "nova-api", f"/os-services/{service_id}", changes)


def parse_time(text: str | None) -> float:
    """Epoch seconds of one of Nova's naive UTC timestamps (0 for none)."""
    if not text:
        return 0.0
    stamp = datetime.fromisoformat(text.rstrip("Z").split(".")[0])
    return stamp.replace(tzinfo=UTC).timestamp()


def wait(predicate: Any, timeout: float, what: str, interval: float = 1.0,
         quiet: bool = False) -> Any:
    """Call predicate until it returns something truthy; raise TimeoutError naming ``what``
    (or, if QUIET, return None)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            result = predicate()
            if result:
                return result
        except (RestError, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            if quiet:
                return None
            raise TimeoutError(f"{what}: not after {timeout:.0f}s" + (f" ({last})" if last else ""))
        time.sleep(interval)
