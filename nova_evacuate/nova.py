"""The Nova adapter: the few compute-service calls instance HA makes, each with its microversion.

Every method sends one request with the microversion it was written and tested against, puts
only the body keys it was given, and turns any failure into :class:`NovaError` with a ``kind``
the caller can decide on. Messages name the operation and the host, never a credential, and
exceptions are raised ``from None`` so no chained keystoneauth error carries request details
into a log.

openstacksdk is imported inside the functions that connect only: the fence agent's
``metadata`` path and the compute-node monitor import this package and must stay cheap.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from os import PathLike
from typing import Any, Literal, TypeVar
from urllib.parse import quote, urlencode

from nova_evacuate.cloud_args import CloudChoice, missing_cloud, select_cloud, set_in_file
from nova_evacuate.instance_recovery import InstanceAction, StoppedServer
from nova_evacuate.plan import Aggregate, Migration, RebuildEvent, Resources, Server, is_true
from nova_evacuate.token_cache import TokenCache
from nova_evacuate.watchdog import FLAVOR_KEY as WATCHDOG_FLAVOR_KEY
from nova_evacuate.watchdog import IMAGE_KEY as WATCHDOG_IMAGE_KEY
from nova_evacuate.watchdog import Flavor, Image
from openstack_ha.logsetup import hide, redacted, url_secrets

# Services by UUID: from 2.53 ``PUT /os-services/{id}`` takes status, disabled_reason and
# forced_down together, and ids are UUIDs, stable across cells (2.11-2.52 addressed a service
# by host and binary). Reads use it too, so the ids they return are the ones the PUT takes.
# The evacuation engine pins its own (2.94 keeps an evacuated server ACTIVE; 2.95 stops it).
SERVICES_MICROVERSION = "2.53"
# Everything the evacuation engine does to servers: 2.94 is the last microversion where an
# evacuated server keeps its power state (2.95 lands every evacuated server stopped). It also
# gives lock reasons (2.73), flavor extra specs in server and flavor lists (2.47, 2.61),
# migration filters by type and changes-since with paging (2.59, 2.80), and evacuate without
# onSharedStorage (2.14) or force (2.68): Nova checks the storage itself, and a target host
# given is still validated by the scheduler.
ENGINE_MICROVERSION = "2.94"
# Placement: 1.29 for allocation candidates whose provider summaries carry every resource
# class of each provider (1.27), with nested providers (1.29), as Nova 34 supports.
PLACEMENT_MICROVERSION = "1.29"
# The smallest request every provider with any room at all satisfies: its summaries are the
# whole cloud's capacity in one answer (a provider without a free VCPU or MiB is left out).
SMALLEST_REQUEST = "VCPU:1,MEMORY_MB:1"
# Gathered per page; Nova's default [api] max_limit is 1000.
PAGE_SIZE = 1000

# Nova's schema for disabled_reason (os-services update_v253): 1 to 255 characters.
DISABLED_REASON_MAX = 255

ErrorKind = Literal["unreachable", "auth", "not_found", "ambiguous", "refused", "api"]

# fence_compute's endpoint_type values, as keystoneauth names the interfaces.
_INTERFACES = {"publicurl": "public", "internalurl": "internal", "adminurl": "admin",
               "public": "public", "internal": "internal", "admin": "admin"}
# Nova's answer to a force-up while 'done' evacuation records remain (nova/api/openstack/
# compute/services.py, _check_for_evacuations; a 400, "move to 409 under a new microversion").
_FORCE_UP_REFUSED = "evacuation migration records remain"

T = TypeVar("T")


class NovaError(Exception):
    """A Nova or Keystone call failed. ``kind`` is one of :data:`ErrorKind`; ``status`` the
    HTTP status when Nova answered. The message names the operation, never credentials."""

    def __init__(self, kind: ErrorKind, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status


class ForceUpRefused(NovaError):
    """Nova refused to clear forced_down: the host's evacuation migrations are still 'done'.

    They turn 'completed' once the returning nova-compute has started and cleaned up, so
    unfencing must accept this answer and the host-return step retry later
    (ARCHITECTURE.md, invariant 4)."""


@dataclass(frozen=True)
class ComputeService:
    """One nova-compute service record, as ``GET /os-services`` shows it at 2.53."""

    id: str
    host: str
    state: str  # 'up' or 'down'
    status: str  # 'enabled' or 'disabled'
    forced_down: bool
    disabled_reason: str | None
    updated_at: datetime | None

    @property
    def live(self) -> bool:
        """Nova sees it up and it is not forced down: it may take (and is taking) work."""
        return self.state == "up" and not self.forced_down

    @classmethod
    def from_wire(cls, body: dict[str, Any]) -> ComputeService:
        return cls(id=str(body["id"]), host=body["host"], state=body["state"],
                   status=body["status"], forced_down=bool(body.get("forced_down")),
                   disabled_reason=body.get("disabled_reason"),
                   updated_at=_nova_time(body.get("updated_at")))


def _nova_time(text: str | None) -> datetime | None:
    # Nova gives naive UTC timestamps ("2026-11-30T12:00:00.000000").
    if not text:
        return None
    return datetime.fromisoformat(text.rstrip("Z")).replace(tzinfo=UTC)


def host_candidates(host: str, domain: str | None = None) -> set[str]:
    """The Nova host names that may denote ``host`` (lower case): as given, its short name,
    and with ``domain`` appended to either."""
    host = host.strip().rstrip(".").lower()
    short = host.split(".", 1)[0]
    names = {host, short}
    if domain:
        domain = domain.strip().strip(".").lower()
        names |= {f"{host}.{domain}", f"{short}.{domain}"}
    return names


def match_service(services: Iterable[ComputeService], host: str,
                  domain: str | None = None) -> ComputeService:
    """The one service that is ``host``.

    A service matches when its host is a candidate name (:func:`host_candidates`) or, with no
    domain given, when its short name is the given host's short name: fence_compute's way of
    letting a cluster of short names fence Nova FQDNs without ``domain``. fence_compute then
    guesses a domain and overrides a configured one that disagrees; here any second match is an
    error naming both, since fencing must never pick one record of two."""
    names = host_candidates(host, domain)
    short = host.strip().split(".", 1)[0].lower()
    found = [s for s in services
             if s.host.lower() in names or (not domain and s.host.split(".", 1)[0].lower() == short)]
    where = f"{host!r}" + (f" (domain {domain!r})" if domain else "")
    if not found:
        raise NovaError("not_found", f"no nova-compute service for host {where}")
    if len(found) > 1:
        hosts = ", ".join(sorted(s.host for s in found))
        raise NovaError("ambiguous", f"host {where} matches several nova-compute services: {hosts}")
    return found[0]


class Nova:
    """The compute-service calls, over an openstacksdk connection (see :func:`connect`)."""

    def __init__(self, connection: Any, *, secrets: Iterable[str] = (),
                 token_cache: TokenCache | None = None) -> None:
        self._conn = connection
        # Scrubbed from every error message, in case a library ever echoes one.
        self._secrets = tuple(s for s in secrets if s)
        # A token saved by an earlier run, so that the first call skips the password check
        self._token_cache = token_cache
        self._token_state: str | None = None
        if token_cache is not None:
            self._token_state = token_cache.load()
            try:
                connection.session.auth.set_auth_state(self._token_state)
            except (ValueError, KeyError, TypeError):  # unreadable: authenticate as usual
                token_cache.forget()
                self._token_state = None

    # ------------------------------------------------------------------ services

    def compute_services(self) -> list[ComputeService]:
        """Every nova-compute service: one list call."""
        body = self._call("GET", "/os-services?binary=nova-compute", "list compute services")
        return [ComputeService.from_wire(s) for s in body["services"]]

    def compute_service(self, host: str, domain: str | None = None) -> ComputeService:
        """The nova-compute service of ``host`` (see :func:`match_service`).

        One unfiltered list call: a server-side ``host=`` filter matches one exact name, and
        a host has up to four candidate names plus the short-name match."""
        services = self._call("GET", "/os-services?binary=nova-compute",
                              "find compute service", host)["services"]
        return match_service((ComputeService.from_wire(s) for s in services), host, domain)

    def compute_hosts(self) -> list[str]:
        """The hosts of every nova-compute service (fence_compute's ``list``): what fencing can
        act on, including a host whose hypervisor is not mapped yet."""
        return sorted(s.host for s in self.compute_services())

    def force_down(self, service_id: str, forced: bool) -> ComputeService:
        """Set or clear forced_down. Clearing it raises :class:`ForceUpRefused` while the
        host's evacuation migration records are still 'done'."""
        op = "force down" if forced else "clear forced_down of"
        return self._update(service_id, {"forced_down": forced}, f"{op} service")

    def disable(self, service_id: str, reason: str | None) -> ComputeService:
        """Disable the service with ``reason`` (None: no reason, which clears an old one)."""
        body: dict[str, Any] = {"status": "disabled"}
        if reason is not None:
            if not 1 <= len(reason) <= DISABLED_REASON_MAX:
                # Nova would answer 400; refusing here says why without a round trip.
                raise NovaError("refused", f"disable reason has {len(reason)} characters;"
                                f" Nova takes 1 to {DISABLED_REASON_MAX}")
            body["disabled_reason"] = reason
        return self._update(service_id, body, "disable service")

    def enable(self, service_id: str) -> ComputeService:
        """Enable the service; Nova clears its disabled_reason at the same time."""
        return self._update(service_id, {"status": "enabled"}, "enable service")

    # ------------------------------------------------------------------ servers

    def servers(self, *, host: str | None = None, changes_since: datetime | None = None,
                ids: Iterable[str] | None = None) -> list[Server]:
        """Servers of every project, on ``host`` and/or changed since ``changes_since``
        (deleted ones left out); ``ids`` keeps only those. One list call per page."""
        query: dict[str, Any] = {"all_tenants": "1"}
        if host:
            query["host"] = host
        if changes_since:
            query["changes-since"] = _nova_format(changes_since)
        wanted = set(ids) if ids is not None else None
        found = self._pages("/servers/detail", query, "servers", "list servers", host)
        return [server_from_wire(s) for s in found
                if s.get("status") != "DELETED" and (wanted is None or s["id"] in wanted)]

    def evacuation_migrations(self, source_host: str | None, since: datetime) -> list[Migration]:
        """Evacuation migrations from ``source_host`` (None: from any host) changed since
        ``since``: one list call per page, whatever the number of servers being tracked."""
        query = {"migration_type": "evacuation", "changes-since": _nova_format(since)}
        if source_host:
            query["source_compute"] = source_host
        found = self._pages("/os-migrations", query, "migrations", "list migrations",
                            source_host)
        return [migration_from_wire(m) for m in found]

    def unstarted_evacuations(self, since: datetime) -> list[Migration]:
        """Evacuations created since ``since`` that no compute host has started (status still
        "accepted"), from any host. changes-since never lists them (they were never updated),
        yet they matter: one an earlier run sent is under way, and one a destination took
        before it failed waits in its queue and runs when its nova-compute returns."""
        query = {"migration_type": "evacuation", "status": "accepted"}
        found = self._pages("/os-migrations", query, "migrations", "list migrations")
        return [m for m in map(migration_from_wire, found)
                if m.created_at >= since.timestamp()]

    def servers_in_error(self, since: datetime) -> list[Server]:
        """Servers of every project in ERROR, changed since ``since`` (one list call; Nova
        filters on the state itself, so one shown as REBUILD with its task left is listed)."""
        query = {"all_tenants": "1", "status": "ERROR", "changes-since": _nova_format(since)}
        found = self._pages("/servers/detail", query, "servers", "list servers")
        return [server_from_wire(s) for s in found]

    def rebuild_events(self, server_id: str, since: datetime) -> list[RebuildEvent]:
        """The compute hosts' ``compute_rebuild_instance`` events of the server's evacuate
        actions since ``since``: which host ran each rebuild, and how it ended."""
        actions = self._call("GET", f"{_server_path(server_id)}/os-instance-actions?"
                             f"{urlencode({'changes-since': _nova_format(since)})}",
                             "list actions of server", server_id,
                             microversion=ENGINE_MICROVERSION).get("instanceActions", [])
        events: list[RebuildEvent] = []
        for action in actions:
            if action.get("action") != "evacuate":
                continue
            detail = self._call("GET", f"{_server_path(server_id)}/os-instance-actions/"
                                f"{quote(str(action['request_id']), safe='')}",
                                "read action of server", server_id,
                                microversion=ENGINE_MICROVERSION).get("instanceAction", {})
            events += [RebuildEvent(e.get("host") or "", e.get("result") or "")
                       for e in detail.get("events") or []
                       if e.get("event") == "compute_rebuild_instance"]
        return events

    def evacuate(self, server_id: str, host: str | None = None) -> None:
        body: dict[str, Any] = {"host": host} if host else {}
        self._action(server_id, {"evacuate": body}, "evacuate")

    def lock(self, server_id: str, reason: str) -> None:
        self._action(server_id, {"lock": {"locked_reason": reason[:255]}}, "lock")

    def unlock(self, server_id: str) -> None:
        self._action(server_id, {"unlock": None}, "unlock")

    def reset_state(self, server_id: str, state: Literal["error", "active"]) -> None:
        self._action(server_id, {"os-resetState": {"state": state}}, "reset state of")

    def stop(self, server_id: str) -> None:
        self._action(server_id, {"os-stop": None}, "stop")

    def pause(self, server_id: str) -> None:
        self._action(server_id, {"pause": None}, "pause")

    def _action(self, server_id: str, body: dict[str, Any], op: str) -> None:
        self._call("POST", f"{_server_path(server_id)}/action", f"{op} server", server_id, body,
                   microversion=ENGINE_MICROVERSION)

    # ------------------------------------------------------------------ what selection reads

    def any_flavor_tagged(self, key: str = "evacuable") -> bool:
        """Whether any flavor, public or not, has extra spec ``key`` true (one call per page:
        flavor lists carry extra specs from 2.61)."""
        flavors = self._pages("/flavors/detail", {"is_public": "None"}, "flavors",
                              "list flavors")
        return any(is_true((f.get("extra_specs") or {}).get(key, "")) for f in flavors)

    def aggregates(self) -> list[Aggregate]:
        body = self._call("GET", "/os-aggregates", "list aggregates",
                          microversion=ENGINE_MICROVERSION)
        return [Aggregate(a["name"], frozenset(a.get("hosts") or ()), a.get("metadata") or {})
                for a in body["aggregates"]]

    def tagged_images(self, key: str = "evacuable") -> frozenset[str]:
        """Ids of the images whose property ``key`` is true; Glance filters on it. Every
        visibility (community images too) and hidden images as well, which Glance's default
        list leaves out (as :meth:`images` reads them): a server booted from one is evacuable
        all the same."""
        ids: set[str] = set()
        for value in ("true", "True"):  # Glance's property filter is an exact match
            for hidden in ("false", "true"):
                path: str | None = "/images?" + urlencode(
                    {key: value, "visibility": "all", "os_hidden": hidden, "limit": 1000})
                while path:
                    body = self._call("GET", path, "list evacuable images", service="image")
                    ids |= {i["id"] for i in body.get("images", [])}
                    # "next" is "/v2/images?marker=...", and the proxy's endpoint ends in /v2
                    path = body.get("next", "").removeprefix("/v2") or None
        return frozenset(ids)

    def free_resources(self, hosts: Iterable[str] | None = None) -> dict[str, Resources]:
        """Free VCPU, MEMORY_MB and DISK_GB per host's resource provider (of ``hosts``, or
        every one), in two Placement requests whatever the cloud's size (not two per host):
        the providers' names, and the allocation candidates for the smallest request, whose
        provider summaries carry each provider's capacity ((total - reserved) *
        allocation_ratio) and usage. A host absent from the candidates has no room at all.
        Summaries do not carry max_unit: a server above a host's max_unit fails its claim
        there and is sent to the scheduler's pick."""
        wanted = None if hosts is None else set(hosts)
        providers = self._call("GET", "/resource_providers", "list resource providers",
                               service="placement")["resource_providers"]
        names = {rp["uuid"]: rp["name"] for rp in providers
                 if wanted is None or rp["name"] in wanted}
        candidates = self._call(
            "GET", "/allocation_candidates?" + urlencode({"resources": SMALLEST_REQUEST}),
            "read allocation candidates", service="placement")
        free: dict[str, Resources] = {}
        for uuid, summary in candidates.get("provider_summaries", {}).items():
            if uuid in names:
                resources = summary.get("resources", {})
                free[names[uuid]] = Resources(*(
                    _free(resources.get(rc)) for rc in ("VCPU", "MEMORY_MB", "DISK_GB")))
        return free

    def adopt_token(self, other: Nova) -> None:
        """Start from ``other``'s Keystone token (and catalog), not a password check of its
        own: the worker's evacuation threads each have a connection, and a new one would
        cost every evacuation about 0.3 s before its first request. keystoneauth still
        authenticates again when the token is about to expire or is refused."""
        state = other._conn.session.auth.get_auth_state()
        if state:
            self._conn.session.auth.set_auth_state(state)

    def ping(self) -> None:
        """A Keystone token and one admin-only Nova call: what ``monitor`` needs to trust that
        fencing could reach Nova. Raises :class:`NovaError`."""
        self._guard("get a Keystone token", None, self._conn.session.get_token)
        self._call("GET", "/os-services?binary=nova-compute", "list compute services")

    # ------------------------------------------------------------------ watchdog
    # What openstack-ha-watchdog (nova_evacuate/watchdog_cli.py) reads and writes: list
    # calls for the whole cloud, and the two writes that set a watchdog action.

    def servers_with_launch_times(self) -> list[tuple[Server, datetime | None]]:
        """Every server of every project (deleted ones left out), each with when it was
        last built (``OS-SRV-USG:launched_at``: boot or rebuild; None before its first
        boot). One list call per page; at 2.94 each carries its embedded flavor with its
        extra specs (2.47 and later)."""
        found = self._pages("/servers/detail", {"all_tenants": "1"}, "servers", "list servers")
        return [(server_from_wire(s), _nova_time(s.get("OS-SRV-USG:launched_at")))
                for s in found if s.get("status") != "DELETED"]

    def flavors(self) -> list[Flavor]:
        """Every flavor, public or not, with its watchdog extra spec (one call per page:
        flavor lists carry extra specs from 2.61)."""
        found = self._pages("/flavors/detail", {"is_public": "None"}, "flavors", "list flavors")
        return [flavor_from_wire(f) for f in found]

    def images(self, ids: Iterable[str] | None = None) -> list[Image]:
        """Every image Glance has (every visibility, hidden ones too: a list without
        ``os_hidden=true`` leaves them out), with its watchdog property; with ``ids``, only
        those (Glance's ``id=in:``, 50 a request). One call per page of each. An image
        Glance no longer lists is left out."""
        wanted = sorted(set(ids)) if ids is not None else None
        # (id filter, page size) per pass
        queries: list[tuple[dict[str, str], int]] = [({}, 1000)] if wanted is None else [
            ({"id": "in:" + ",".join(wanted[start:start + 50])}, 50)
            for start in range(0, len(wanted), 50)]
        images: dict[str, Image] = {}
        for by_id, limit in queries:
            for hidden in ("false", "true"):
                path: str | None = "/images?" + urlencode(
                    {**by_id, "visibility": "all", "os_hidden": hidden, "limit": limit})
                while path:
                    body = self._call("GET", path, "list images", service="image")
                    images.update((i["id"], image_from_wire(i)) for i in body.get("images", []))
                    # "next" is "/v2/images?marker=...", and the proxy's endpoint ends in /v2
                    path = body.get("next", "").removeprefix("/v2") or None
        return list(images.values())

    def image_watchdog_actions(self, image_ids: Iterable[str]) -> dict[str, str | None]:
        """The watchdog property of each image of ``image_ids`` (None: unset): :meth:`images`
        of those ids, a handful of requests for one host's servers."""
        return {i.id: i.watchdog_action for i in self.images(image_ids)}

    def set_flavor_extra_spec(self, flavor_id: str, key: str, value: str) -> None:
        """Set one extra spec of a flavor, at 2.86: from that microversion Nova validates
        the keys and values it knows, so a value it would refuse at boot is refused here."""
        self._call("POST", f"/flavors/{quote(flavor_id, safe='')}/os-extra_specs",
                   "set extra spec of flavor", flavor_id, {"extra_specs": {key: value}},
                   microversion=EXTRA_SPECS_VALIDATED_MICROVERSION)

    def set_image_property(self, image_id: str, key: str, value: str, *,
                           replace: bool) -> None:
        """Set one property of an image with a JSON patch (``replace`` an existing one,
        else ``add``). Glance answers in its own words: see :meth:`_glance_error`."""
        patch = [{"op": "replace" if replace else "add", "path": f"/{key}", "value": value}]

        def request() -> Any:
            return self._conn.image.request(
                f"/images/{quote(image_id, safe='')}", "PATCH", json=patch,
                headers={"Content-Type": IMAGE_PATCH_TYPE})

        op = "set property of image"
        response = self._guard(op, image_id, request)
        if response.status_code >= 400:
            raise self._glance_error(op, image_id, response)

    def count_requests(self) -> Callable[[], int]:
        """Count the HTTP requests this connection sends from now on, every one of them
        (Keystone's, version discovery, the API calls): returns a function that gives the
        count so far. A response hook on the connection's ``requests`` session."""
        sent = [0]

        def hook(response: Any, *args: Any, **kwargs: Any) -> None:
            sent[0] += 1

        self._conn.session.session.hooks["response"].append(hook)
        return lambda: sent[0]

    def _glance_error(self, op: str, target: str, response: Any) -> NovaError:
        status = response.status_code
        text = self._scrub(f"{op} {target}: Glance answered {status}: {_nova_message(response)}")
        return NovaError(_http_kind(status), text, status)

    # ------------------------------------------------------------------ plumbing

    def _update(self, service_id: str, body: dict[str, Any], op: str) -> ComputeService:
        answer = self._call("PUT", f"/os-services/{quote(service_id, safe='')}", op, service_id,
                            body)
        return ComputeService.from_wire(answer["service"])

    def _pages(self, path: str, query: dict[str, Any], key: str, op: str,
               target: str | None = None) -> list[dict[str, Any]]:
        """Every item of a paged Nova list, following marker links."""
        items: list[dict[str, Any]] = []
        query = {**query, "limit": PAGE_SIZE}
        while True:
            body = self._call("GET", f"{path}?{urlencode(query)}", op, target,
                              microversion=ENGINE_MICROVERSION)
            page = body.get(key, [])
            items += page
            if len(page) < PAGE_SIZE or not body.get(f"{key}_links"):
                return items
            query["marker"] = page[-1]["uuid" if key == "migrations" else "id"]

    def _call(self, method: str, path: str, op: str, target: str | None = None,
              body: dict[str, Any] | None = None, *, microversion: str = SERVICES_MICROVERSION,
              service: str = "compute") -> Any:
        def request() -> Any:
            # Inside the guard: the first use of a proxy authenticates and reads the catalog.
            proxy = getattr(self._conn, service)
            version = PLACEMENT_MICROVERSION if service == "placement" else (
                microversion if service == "compute" else None)
            return proxy.request(path, method, json=body, microversion=version)

        response = self._guard(op, target, request)
        if response.status_code < 400:
            return response.json() if response.content else {}
        raise self._http_error(op, target, response)

    def _guard(self, op: str, target: str | None, fn: Callable[[], T]) -> T:
        """Run fn, turning keystoneauth/openstacksdk exceptions into NovaError."""
        from keystoneauth1 import exceptions as ks  # a dependency of openstacksdk

        # openstacksdk's own errors, where a connection of it is in use (importing it only
        # to name them would cost a fence 0.2 s)
        sdk = sys.modules.get("openstack.exceptions")
        sdk_endpoint = (sdk.EndpointNotFound,) if sdk else ()
        sdk_other = (sdk.SDKException,) if sdk else ()
        what = f"{op} {target}" if target else op
        try:
            result = fn()
            self._keep_token()
            return result
        except (ks.ConnectionError, ks.DiscoveryFailure) as exc:
            raise NovaError("unreachable", self._text(f"{what}: cannot reach the cloud", exc)) from None
        except (ks.Unauthorized, ks.Forbidden, ks.AuthorizationFailure, ks.MissingAuthPlugin) as exc:
            raise NovaError("auth", self._text(f"{what}: authentication refused", exc)) from None
        except (ks.EndpointNotFound, *sdk_endpoint) as exc:
            raise NovaError("api", self._text(f"{what}: no compute endpoint", exc)) from None
        except ks.HttpError as exc:  # Keystone's own answer, e.g. 503 behind a proxy
            kind = _http_kind(exc.http_status)
            raise NovaError(kind, self._text(f"{what}: Keystone answered", exc), exc.http_status) from None
        except (ks.ClientException, *sdk_other) as exc:
            raise NovaError("api", self._text(f"{what}: failed", exc)) from None

    def _keep_token(self) -> None:
        """Save the token for the next run when it is new (authenticated, or renewed)."""
        if self._token_cache is None:
            return
        state = self._conn.session.auth.get_auth_state()
        if state and state != self._token_state:
            self._token_cache.save(state)
            self._token_state = state

    def _http_error(self, op: str, target: str | None, response: Any) -> NovaError:
        status = response.status_code
        detail = _nova_message(response)
        what = f"{op} {target}" if target else op
        text = self._scrub(f"{what}: Nova answered {status}: {detail}")
        if status == 400 and _FORCE_UP_REFUSED in detail:
            return ForceUpRefused("refused", text, status)
        return NovaError(_http_kind(status), text, status)

    def _text(self, prefix: str, exc: BaseException) -> str:
        return self._scrub(f"{prefix} ({type(exc).__name__}: {exc})")

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return redacted(text)[:1000]

    # ---- instance recovery (nova_evacuate/instance_recovery.py; the worker's recovery scan)

    def stopped_servers(self, since: datetime) -> list[StoppedServer]:
        """Servers of every project SHUTOFF and changed since ``since``, each with Nova's
        ``updated`` time of it: one list call per page (Nova filters on both)."""
        query = {"all_tenants": "1", "status": "SHUTOFF", "changes-since": _nova_format(since)}
        found = self._pages("/servers/detail", query, "servers", "list stopped servers")
        return [StoppedServer(server_from_wire(s), s.get("updated") or "") for s in found
                if s.get("status") == "SHUTOFF"]

    def instance_actions(self, server_id: str, limit: int) -> list[InstanceAction]:
        """The server's ``limit`` newest instance actions, newest first (one request; 2.58
        and later take ``limit``). ``user_id`` and ``project_id`` are None where Nova
        recorded the action under its own admin context (its power-state sync)."""
        body = self._call("GET", f"{_server_path(server_id)}/os-instance-actions?"
                          f"{urlencode({'limit': limit})}", "list actions of server",
                          server_id, microversion=ENGINE_MICROVERSION)
        return [InstanceAction(action=a.get("action") or "", request_id=a.get("request_id") or "",
                               user_id=a.get("user_id") or None,
                               project_id=a.get("project_id") or None,
                               start_time=a.get("start_time") or "", message=a.get("message"))
                for a in body.get("instanceActions") or []]

    def start(self, server_id: str) -> None:
        """Start a stopped server (Nova refuses unless it is SHUTOFF with no task: 409)."""
        self._action(server_id, {"os-start": None}, "start")


def _free(summary: dict[str, Any] | None) -> int:
    """What a provider summary's resource class has left: capacity minus used."""
    if not summary:
        return 0
    return max(0, int(summary.get("capacity", 0)) - int(summary.get("used", 0)))


def _nova_format(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def server_from_wire(body: dict[str, Any]) -> Server:
    flavor = body.get("flavor") or {}
    swap_gb = -(-int(flavor.get("swap") or 0) // 1024)
    image = body.get("image")
    return Server(
        id=body["id"], name=body.get("name") or "", status=body.get("status") or "",
        host=body.get("OS-EXT-SRV-ATTR:host"), task_state=body.get("OS-EXT-STS:task_state"),
        image_id=image.get("id") if isinstance(image, dict) else None,
        flavor_name=flavor.get("original_name") or "", vcpus=int(flavor.get("vcpus") or 0),
        ram_mb=int(flavor.get("ram") or 0),
        disk_gb=int(flavor.get("disk") or 0) + int(flavor.get("ephemeral") or 0) + swap_gb,
        flavor_extra_specs=flavor.get("extra_specs") or {}, metadata=body.get("metadata") or {},
        locked=bool(body.get("locked")), locked_reason=body.get("locked_reason"),
        project_id=body.get("tenant_id") or "", vm_state=body.get("OS-EXT-STS:vm_state") or "")


def migration_from_wire(body: dict[str, Any]) -> Migration:
    created, updated = _nova_time(body.get("created_at")), _nova_time(body.get("updated_at"))
    return Migration(
        id=int(body["id"]), server_id=body["instance_uuid"], status=body["status"],
        source_host=body.get("source_compute"), dest_host=body.get("dest_compute"),
        created_at=created.timestamp() if created else 0.0,
        migration_type=body.get("migration_type") or "evacuation",
        updated_at=updated.timestamp() if updated else 0.0)


def _http_kind(status: int | None) -> ErrorKind:
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status in (400, 409):
        return "refused"
    if status in (502, 503, 504):
        return "unreachable"  # a proxy or load balancer in front of a service it cannot reach
    return "api"


def _nova_message(response: Any) -> str:
    # Nova's errors are {"badRequest": {"code": 400, "message": "..."}}.
    try:
        body = response.json()
        messages = [v["message"] for v in body.values() if isinstance(v, dict) and "message" in v]
        if messages:
            return " ".join(str(m) for m in messages)
    except (ValueError, AttributeError):
        pass
    return (response.text or response.reason or "").strip()[:300]


def _server_path(server_id: str) -> str:
    """``/servers/<id>``, the id quoted: a value read from an API goes into a URL path only
    as one segment."""
    return f"/servers/{quote(server_id, safe='')}"


def connect(*, cloud: str | None = None, clouds_yaml: str | PathLike[str] | None = None,
            auth_url: str | None = None, username: str | None = None, password: str | None = None,
            project_name: str | None = None, user_domain_name: str = "Default",
            project_domain_name: str = "Default", region_name: str | None = None,
            interface: str | None = None, insecure: bool = False, timeout: float = 30,
            token_cache: str | PathLike[str] | None = None, sdk_config: Any = None,
            cloud_source: str | None = None) -> Nova:
    """A :class:`Nova` over an openstacksdk connection (``cloud``) or keystoneauth alone
    (explicit options: :class:`KeystoneConnection`).

    Either ``cloud`` (an entry of clouds.yaml, searched as openstacksdk does, or only
    ``clouds_yaml`` when given), or explicit Keystone v3 options (fence_compute's parameters:
    ``tenant_name`` is ``project_name``). With ``cloud``, ``region_name``, ``interface`` and
    ``insecure`` override clouds.yaml only when given; without it the interface defaults to
    ``internal``, as fence_compute's ``endpoint_type`` does. ``interface`` also takes
    fence_compute's ``internalURL``/``publicURL``/``adminURL``.

    Nothing is sent yet: the first call authenticates, and the keystoneauth session
    re-authenticates whenever its token expires (long evacuations outlive tokens).
    ``token_cache``: a directory where the token is kept for the next run
    (:mod:`nova_evacuate.token_cache`), for short-lived commands. ``sdk_config``: the
    ``openstack.config.OpenStackConfig`` to read ``cloud`` from, instead of one reading
    ``clouds_yaml`` (:func:`connect_to_cloud` builds it); ``cloud_source``: where the cloud's
    name came from, for the message when it cannot be used.
    """
    options: dict[str, Any] = {"api_timeout": timeout}
    if region_name:
        options["region_name"] = region_name
    if interface or not cloud:
        key = (interface or "internal").lower()
        if key not in _INTERFACES:
            raise NovaError("api", f"unknown endpoint interface {interface!r}")
        options["interface"] = _INTERFACES[key]
    if insecure:
        options["verify"] = False
    if not cloud:
        missing = [n for n, v in (("auth_url", auth_url), ("username", username),
                                  ("password", password)) if not v]
        if missing:
            raise NovaError("auth", "Keystone options missing: " + ", ".join(missing))
        secrets = [password or "", *url_secrets(auth_url or "")]
        hide(*secrets)  # keystoneauth's own warnings quote the auth URL
        connection: Any = KeystoneConnection.password(
            auth_url=auth_url or "", username=username or "", password=password or "",
            project_name=project_name, user_domain_name=user_domain_name,
            project_domain_name=project_domain_name, region_name=region_name,
            interface=options["interface"], verify=not insecure, timeout=timeout)
    else:
        import openstack.config
        import openstack.connection
        from keystoneauth1 import exceptions as ks
        from openstack import exceptions as sdk

        try:
            config = sdk_config
            if config is None:
                files = [str(clouds_yaml)] if clouds_yaml else None
                # a clouds.yaml named here is read alone: OS_CLIENT_CONFIG_FILE (which
                # openstacksdk puts first when it reads the environment) cannot replace it
                config = openstack.config.OpenStackConfig(
                    config_files=files,
                    **({"vendor_files": [], "secure_files": [], "load_envvars": False}
                       if files else {}))
            region = config.get_one(cloud=cloud, **options)
        # keystoneauth's: an entry without what its auth type needs ("Auth plugin requires
        # parameters which were not given: auth_url"), raised as it loads the plugin
        except (sdk.SDKException, ks.ClientException) as exc:
            source = f" from {cloud_source}" if cloud_source else ""
            text = f"cannot use cloud {cloud!r}{source}: {exc}"
            raise NovaError("auth", text.replace(password, "***") if password else text) from None
        auth = region.get_auth_args()
        secrets = [password or "", str(auth.get("password") or ""),
                   *url_secrets(str(auth.get("auth_url") or ""))]
        hide(*secrets)  # keystoneauth's own warnings quote the auth URL
        connection = openstack.connection.Connection(config=region)
    cache = TokenCache.for_plugin(token_cache, connection.session.auth) if token_cache else None
    return Nova(connection, secrets=secrets, token_cache=cache)


class KeystoneConnection:
    """What :class:`Nova` uses of an openstacksdk connection (``session``, and a ``compute``
    and a ``placement`` proxy whose ``request`` answers without raising), over keystoneauth
    alone. :func:`connect` uses it for explicit Keystone options (fence_nova's reference
    configuration): openstacksdk takes about 0.2 s to import, a large part of a fence that
    must end within half a second. The password plugin is keystoneauth's generic one, as
    openstacksdk's ``password`` auth type is: an unversioned auth URL is discovered."""

    def __init__(self, session: Any, *, interface: str, region_name: str | None) -> None:
        from keystoneauth1.adapter import Adapter

        self.session = session
        self.compute, self.placement = (
            Adapter(session, service_type=service, interface=interface,
                    region_name=region_name, raise_exc=False)
            for service in ("compute", "placement"))

    @classmethod
    def password(cls, *, auth_url: str, username: str, password: str,
                 project_name: str | None, user_domain_name: str, project_domain_name: str,
                 region_name: str | None, interface: str, verify: bool,
                 timeout: float) -> KeystoneConnection:
        from keystoneauth1.identity.generic import Password
        from keystoneauth1.session import Session

        auth = Password(auth_url=auth_url, username=username, password=password,
                        project_name=project_name, user_domain_name=user_domain_name,
                        project_domain_name=project_domain_name)
        return cls(Session(auth=auth, verify=verify, timeout=timeout),
                   interface=interface, region_name=region_name)


def connect_from_conf(conf: Any, cloud: str | None = None,
                      environ: Mapping[str, str] | None = None) -> Nova:
    """A :class:`Nova` for the ``[cloud]`` options and the cloud
    :func:`~nova_evacuate.cloud_args.select_cloud` chooses (``cloud``: the command line's;
    ``environ``: the process environment, the default)."""
    environ = os.environ if environ is None else environ
    return connect_to_cloud(conf, select_cloud(cloud, conf, environ), environ)


def connect_to_cloud(conf: Any, choice: CloudChoice,
                     environ: Mapping[str, str] | None = None) -> Nova:
    """A :class:`Nova` for ``choice`` (:mod:`nova_evacuate.cloud_args`) and the other
    ``[cloud]`` options. Raises :class:`NovaError` (kind ``auth``), one line naming where the
    cloud's name and its clouds.yaml came from, when the cloud cannot be used; nothing is
    sent yet.

    openstacksdk reads the environment only for the cloud of the ``OS_*`` variables (and then
    the process's own, as it always does); for any other cloud it is given the clouds.yaml
    files :func:`~nova_evacuate.cloud_args.select_cloud` settled, so an
    ``OS_CLIENT_CONFIG_FILE`` cannot override a configuration file's ``[cloud] clouds_yaml``.
    ``[cloud] interface`` applies to every cloud, as it always has, except that for the
    ``OS_*`` cloud an ``OS_INTERFACE`` beats its default (not a configuration file's value).
    """
    environ = os.environ if environ is None else environ
    c = conf.cloud
    if not choice.name:
        raise NovaError("auth", f"{choice.source} is empty: name a clouds.yaml entry, or leave"
                                f" the option out")
    interface = c.interface
    if choice.env_cloud and environ.get("OS_INTERFACE") \
            and set_in_file(conf, "cloud", "interface") is None:
        interface = None  # openstacksdk takes OS_INTERFACE into the cloud
    config = _openstack_config(choice, environ)
    read = f", in {config.config_filename}" if config.config_filename else ""
    return connect(cloud=choice.name, sdk_config=config, region_name=c.region_name,
                   interface=interface, timeout=c.api_timeout,
                   cloud_source=f"{choice.source}{read}")


def _openstack_config(choice: CloudChoice, environ: Mapping[str, str]) -> Any:
    """openstacksdk's configuration for ``choice``, its cloud checked to be there."""
    import openstack.config
    from openstack import exceptions as sdk
    from openstack.config import loader

    files: dict[str, Any] = {}
    if choice.clouds_yaml_alone:
        files = {"config_files": [choice.clouds_yaml], "vendor_files": [], "secure_files": []}
    elif not choice.env_cloud:
        # what openstacksdk does with these two variables, done here because it reads them
        # only with every other OS_* variable (load_envvars)
        files = {name: [environ[variable], *defaults] if environ.get(variable) else None
                 for name, variable, defaults in (
                     ("config_files", "OS_CLIENT_CONFIG_FILE", loader.CONFIG_FILES),
                     ("secure_files", "OS_CLIENT_SECURE_FILE", loader.SECURE_FILES))}
    try:
        config = openstack.config.OpenStackConfig(load_envvars=choice.env_cloud, **files)
    except sdk.SDKException as exc:
        where = choice.clouds_yaml or "clouds.yaml"
        raise NovaError("auth", f"cannot use cloud {choice.name!r} from {choice.source}:"
                                f" {where} ({choice.clouds_yaml_source}): {exc}") from None
    names = config.get_cloud_names()
    if choice.name not in names:
        # "defaults" alone: openstacksdk's stand-in when no file or variable has a cloud
        listed = () if names == ["defaults"] else names
        raise NovaError("auth", "cannot use " + missing_cloud(
            choice, config.config_filename, listed))
    return config


# ---------------------------------------------------------------------------- watchdog
# Wire formats of what openstack-ha-watchdog reads (see Nova's watchdog section above).

# From 2.86 Nova validates flavor extra specs (keys it knows, and their values).
EXTRA_SPECS_VALIDATED_MICROVERSION = "2.86"
# Glance's JSON patch media type for image updates (API 2.1 and later).
IMAGE_PATCH_TYPE = "application/openstack-images-v2.1-json-patch"


def flavor_from_wire(body: dict[str, Any]) -> Flavor:
    value = (body.get("extra_specs") or {}).get(WATCHDOG_FLAVOR_KEY)
    return Flavor(id=str(body["id"]), name=body.get("name") or "",
                  watchdog_action=None if value is None else str(value))


def image_from_wire(body: dict[str, Any]) -> Image:
    value = body.get(WATCHDOG_IMAGE_KEY)
    return Image(id=body["id"], name=body.get("name") or "",
                 watchdog_action=None if value is None else str(value),
                 updated_at=_glance_time(body.get("updated_at")))


def _glance_time(text: str | None) -> float | None:
    """Glance's "2026-11-30T12:00:00Z" as epoch seconds; None when absent or unreadable."""
    if not text:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
