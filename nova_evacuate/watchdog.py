"""Guest OS recovery through Nova's watchdog: which servers have it, and what to change.

Pure functions over plain data: no I/O, no clock. :mod:`nova_evacuate.watchdog_cli` reads
the cloud (:mod:`nova_evacuate.nova`) and writes the changes.

Libvirt gives a guest an i6300esb watchdog when the flavor's extra spec
``hw:watchdog_action`` or the image's property ``hw_watchdog_action`` asks for one; when
the guest OS hangs and stops feeding it, QEMU takes the action. Only ``reset`` brings the
guest back: ``poweroff`` and ``pause`` stop it, ``none`` does nothing, ``disabled`` (the
default) gives no device at all. :func:`effective_action` computes the action as Nova does.

What a server runs with is what Nova copied when it was built: the flavor (extra specs
included) is embedded in the server at boot and changes only with a resize to another
flavor (Nova refuses a resize to the same one), and the image's properties are copied
into its system metadata at boot and change only with a rebuild (an evacuation keeps the
copy). The server list shows the embedded flavor (compute API 2.47 and later), not the
image copy: the image side is read from Glance as it is now, and a server whose image
was changed after it was launched is counted as covered only when its flavor alone
would reset it too (it may still run with the image's old value until it is rebuilt).

Evacuable servers are the ones the evacuation engine would evacuate if their host
failed: :func:`nova_evacuate.plan.select`, host by host, with the engine's
:class:`~nova_evacuate.plan.Policy`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from nova_evacuate.plan import Aggregate, Inventory, Policy, Server, select

FLAVOR_KEY = "hw:watchdog_action"  # flavor extra spec
IMAGE_KEY = "hw_watchdog_action"  # image property
RESET = "reset"  # the only action that recovers the guest
DEFAULT_ACTION = "disabled"  # neither sets one: no watchdog device
# nova.objects.fields.WatchdogAction.ALL (Nova 34); libvirt refuses to build a guest
# with any other value (InvalidWatchdogAction).
NOVA_ACTIONS = frozenset({"none", "pause", "poweroff", "reset", "disabled"})

Kind = Literal["flavor", "image"]
Source = Literal["image", "flavor", "default"]


@dataclass(frozen=True)
class Flavor:
    """A flavor as ``GET /flavors/detail`` (2.61 and later) shows it."""

    id: str
    name: str
    watchdog_action: str | None = None  # its hw:watchdog_action extra spec, None: unset


@dataclass(frozen=True)
class Image:
    """An image as ``GET /v2/images`` shows it."""

    id: str
    name: str
    watchdog_action: str | None = None  # its hw_watchdog_action property, None: unset
    updated_at: float | None = None  # epoch seconds, whole (Glance's resolution)


@dataclass(frozen=True)
class Snapshot:
    """Everything the audit and the enforce plan are made from, read with list calls."""

    servers: tuple[Server, ...]
    flavors: tuple[Flavor, ...]
    images: tuple[Image, ...]
    launched_at: Mapping[str, float] = field(default_factory=dict)  # server id → epoch
    # what plan.select reads, as the engine reads it
    tagged_images: frozenset[str] = frozenset()
    any_tagged_flavor: bool = False
    aggregates: tuple[Aggregate, ...] = ()


@dataclass(frozen=True)
class Effective:
    """The watchdog action a guest gets, and which setting decided it."""

    action: str
    source: Source  # "default": neither the flavor nor the image sets one

    @property
    def recovers(self) -> bool:
        return self.action == RESET


def effective_action(flavor_value: str | None, image_value: str | None) -> Effective:
    """The action as Nova computes it: a mirror of
    ``nova.virt.libvirt.driver.LibvirtDriver._guest_add_watchdog_action`` (Nova 34; there
    is no such function in ``nova/virt/hardware.py``)::

        watchdog_action = (flavor.extra_specs.get('hw:watchdog_action') or 'disabled')
        watchdog_action = image_meta.properties.get('hw_watchdog_action', watchdog_action)

    The flavor's value when it is set and not empty, else ``disabled``; the image's
    property, when set, wins over both. ``None`` means unset. A value outside
    :data:`NOVA_ACTIONS` is returned as it is (libvirt then refuses to build the guest)."""
    if image_value is not None:
        return Effective(image_value, "image")
    if flavor_value:
        return Effective(flavor_value, "flavor")
    return Effective(DEFAULT_ACTION, "default")


# ---------------------------------------------------------------------------- selection


def evacuable_servers(snapshot: Snapshot, policy: Policy) -> tuple[dict[str, str], tuple[str, ...]]:
    """Which servers the engine would evacuate if their host failed: server id → "" when
    evacuable, else why not; and how selection was decided (one text per distinct case).

    :func:`nova_evacuate.plan.select` itself, host by host (a host in an aggregate tagged
    evacuable selects all of its servers). A server on no host (never scheduled, or
    shelved offloaded) is on no host that can fail."""
    by_host: dict[str, list[Server]] = {}
    why: dict[str, str] = {}
    for server in snapshot.servers:
        if server.host:
            by_host.setdefault(server.host, []).append(server)
        else:
            why[server.id] = "on no compute host"
    taggings: set[str] = set()
    for host, servers in sorted(by_host.items()):
        inventory = Inventory(host=host, servers=servers, tagged_images=snapshot.tagged_images,
                              any_tagged_flavor=snapshot.any_tagged_flavor,
                              aggregates=snapshot.aggregates, capacity_known=False)
        chosen, skipped, tagging = select(inventory, policy)
        taggings.add(tagging)
        why.update((s.id, "") for s in chosen)
        why.update((s.server.id, s.reason) for s in skipped)
    return why, tuple(sorted(taggings))


# ---------------------------------------------------------------------------- the audit


@dataclass(frozen=True)
class ServerWatchdog:
    """One server's watchdog, as the audit found it."""

    server: Server
    effective: Effective
    flavor_value: str | None  # of its embedded flavor
    image: Image | None  # None: booted from volume, or the image is not in Glance
    evacuable: bool
    not_evacuable: str  # why not ("" when evacuable)
    image_changed_since_launch: bool
    covered: bool  # the guest would be reset
    reason: str  # why not covered, or a note on what could not be read ("" otherwise)

    @property
    def boot_from_volume(self) -> bool:
        return self.server.image_id is None


@dataclass(frozen=True)
class Audit:
    servers: tuple[ServerWatchdog, ...]  # evacuable uncovered, other uncovered, covered
    flavors_not_reset: tuple[Flavor, ...]  # flavors setting an action other than reset
    images_not_reset: tuple[Image, ...]  # images setting an action other than reset
    selection: tuple[str, ...]  # how evacuable servers were selected
    flavor_count: int = 0
    image_count: int = 0

    @property
    def evacuable_uncovered(self) -> list[ServerWatchdog]:
        return [s for s in self.servers if s.evacuable and not s.covered]

    @property
    def other_uncovered(self) -> list[ServerWatchdog]:
        return [s for s in self.servers if not s.evacuable and not s.covered]

    @property
    def evacuable_count(self) -> int:
        return sum(s.evacuable for s in self.servers)

    @property
    def ok(self) -> bool:
        """Every evacuable server's guest would be reset (the command's exit 0)."""
        return not self.evacuable_uncovered


def sets_other_than_reset(value: str | None, kind: Kind) -> bool:
    """Whether a flavor's or an image's value is set to something that does not recover.
    An empty flavor extra spec counts as unset, as Nova reads it (``or 'disabled'``); an
    empty image property is a value (one Nova refuses)."""
    if kind == "flavor":
        return bool(value) and value != RESET
    return value is not None and value != RESET


def audit(snapshot: Snapshot, policy: Policy) -> Audit:
    """Every server's effective watchdog action, the flavors and images that set one other
    than ``reset``, and the verdict over the evacuable servers (:func:`evacuable_servers`)."""
    evacuable, selection = evacuable_servers(snapshot, policy)
    images = {i.id: i for i in snapshot.images}
    rows = [server_watchdog(s, images.get(s.image_id or ""), snapshot.launched_at.get(s.id),
                            evacuable.get(s.id, "not selected"))
            for s in snapshot.servers]
    rows.sort(key=lambda r: (r.covered, not r.evacuable, r.server.name, r.server.id))
    return Audit(
        servers=tuple(rows),
        flavors_not_reset=tuple(sorted(
            (f for f in snapshot.flavors if sets_other_than_reset(f.watchdog_action, "flavor")),
            key=lambda f: (f.name, f.id))),
        images_not_reset=tuple(sorted(
            (i for i in snapshot.images if sets_other_than_reset(i.watchdog_action, "image")),
            key=lambda i: (i.name, i.id))),
        selection=selection, flavor_count=len(snapshot.flavors),
        image_count=len(snapshot.images))


def server_watchdog(server: Server, image: Image | None, launched_at: float | None,
                    not_evacuable: str) -> ServerWatchdog:
    """One server's row: its effective action from its embedded flavor and its image."""
    flavor_value = server.flavor_extra_specs.get(FLAVOR_KEY)
    effective = effective_action(flavor_value, image.watchdog_action if image else None)
    changed = bool(image and image.updated_at is not None and launched_at is not None
                   and image.updated_at > int(launched_at))  # Glance keeps whole seconds
    # The image decides, but the server runs with the copy it made at boot, which may
    # differ: counted covered only if the flavor alone resets it too (the copy then has
    # no say unless it set another action, which the audit cannot see).
    copy_unknown = changed and effective.source == "image"
    covered = effective.recovers and (
        not copy_unknown or effective_action(flavor_value, None).recovers)
    return ServerWatchdog(
        server=server, effective=effective, flavor_value=flavor_value, image=image,
        evacuable=not not_evacuable, not_evacuable=not_evacuable,
        image_changed_since_launch=changed, covered=covered,
        reason=explain(server, effective, flavor_value, image, changed, covered))


def explain(server: Server, effective: Effective, flavor_value: str | None,
            image: Image | None, changed: bool, covered: bool) -> str:
    """Why ``server``'s guest would not be reset (which flavor or image decides), or, when
    it would, what the audit could not read ("" when nothing)."""
    flavor = f"flavor {server.flavor_name or '(unnamed)'}"
    image_name = f"image {image.name or image.id}" if image else f"image {server.image_id}"
    unseen = ""
    if server.image_id is None:
        unseen = (f"booted from volume: no image; the volume's image metadata could set"
                  f" {IMAGE_KEY} too, and is not read")
    elif image is None:
        unseen = (f"image {server.image_id} is not in Glance (deleted?): the properties the"
                  f" server copied from it at boot are not readable")
    if covered:
        return unseen
    action, source = effective.action, effective.source
    unknown = "" if action in NOVA_ACTIONS else " (not an action Nova knows: the guest cannot be built)"
    if source == "default":
        text = (f"no watchdog: neither {flavor} nor {image_name} sets one" if image
                else f"no watchdog: {flavor} sets none")
    elif source == "flavor":
        text = f"action {action!r} from {flavor}{unknown}"
    elif changed and effective.recovers:
        text = (f"{image_name} was changed after the server was launched; Nova copies image"
                f" properties at boot, so the server may still run with the old value until"
                f" it is rebuilt")
    else:
        text = f"action {action!r} from {image_name}{unknown}"
        if flavor_value:
            text += f", overriding {flavor}'s {flavor_value!r}"
    return f"{text} ({unseen})" if unseen else text


# ---------------------------------------------------------------------------- enforce


@dataclass(frozen=True)
class Target:
    """A flavor or an image to enforce ``reset`` on, with its value now."""

    kind: Kind
    id: str
    name: str
    value: str | None  # None (or "" for a flavor): unset

    @property
    def key(self) -> str:
        return FLAVOR_KEY if self.kind == "flavor" else IMAGE_KEY

    @property
    def unset(self) -> bool:
        return self.value is None or (self.kind == "flavor" and not self.value)


@dataclass(frozen=True)
class Change:
    target: Target
    new: str = RESET


@dataclass(frozen=True)
class Stale:
    """A server that keeps its old copy after the plan's changes."""

    server: Server
    now: str | None  # the action it runs with; None: not readable (its image changed since)
    after: Effective
    needs: Literal["resize", "rebuild"]  # what applies the change to it
    by: str  # the changed flavor or image that decides, in words ("image cirros")


@dataclass(frozen=True)
class EnforcePlan:
    changes: tuple[Change, ...]
    kept: tuple[Target, ...]  # an explicit other value, left (no --override)
    already: tuple[Target, ...]  # already reset
    missing: tuple[str, ...]  # what --all-evacuable could not find, in words
    stale: tuple[Stale, ...]  # servers that keep their old copy until resized or rebuilt


def resolve(kind: Kind, wanted: str, candidates: Iterable[Flavor | Image]) -> Target:
    """The flavor or image ``wanted`` names: by id, else by its one name. Raises
    ``LookupError`` (one line) when none or several match."""
    found = list(candidates)
    by_id = [c for c in found if c.id == wanted]
    matches = by_id or [c for c in found if c.name == wanted]
    if not matches:
        raise LookupError(f"no {kind} has the name or id {wanted!r}")
    if len(matches) > 1:
        ids = ", ".join(sorted(c.id for c in matches))
        raise LookupError(f"several {kind}s are named {wanted!r} ({ids}): give the id")
    (match,) = matches
    return Target(kind, match.id, match.name, match.watchdog_action)


def evacuable_targets(result: Audit, snapshot: Snapshot) -> tuple[list[Target], list[str]]:
    """``--all-evacuable``: the current flavors (by the embedded flavor's name, as Nova
    keeps it) and the images of the evacuable servers; and, in words, those that are gone
    (a deleted flavor or image cannot be changed)."""
    flavors = {f.name: f for f in snapshot.flavors}
    images = {i.id: i for i in snapshot.images}
    targets: dict[tuple[str, str], Target] = {}
    missing: set[str] = set()
    for row in result.servers:
        if not row.evacuable:
            continue
        server = row.server
        flavor = flavors.get(server.flavor_name)
        if flavor is None:
            missing.add(f"flavor {server.flavor_name or '(unnamed)'} no longer exists")
        else:
            targets[("flavor", flavor.id)] = Target("flavor", flavor.id, flavor.name,
                                                    flavor.watchdog_action)
        if server.image_id is None:
            continue
        image = images.get(server.image_id)
        if image is None:
            missing.add(f"image {server.image_id} is not in Glance")
        else:
            targets[("image", image.id)] = Target("image", image.id, image.name,
                                                  image.watchdog_action)
    return sorted(targets.values(), key=_target_order), sorted(missing)


def _target_order(target: Target) -> tuple[str, str, str]:
    return (target.kind, target.name, target.id)


def plan_enforce(targets: Sequence[Target], result: Audit, *, override: bool = False,
                 missing: Sequence[str] = ()) -> EnforcePlan:
    """Set ``reset`` on each target that does not have it: an unset one always, one with
    an explicit other value (``disabled`` included) only with ``override``. Then the
    servers that stay without recovery although their targets reset (:func:`stale`)."""
    unique = {(t.kind, t.id): t for t in targets}
    changes, kept, already = [], [], []
    for target in sorted(unique.values(), key=_target_order):
        if target.value == RESET:
            already.append(target)
        elif target.unset or override:
            changes.append(Change(target))
        else:
            kept.append(target)
    resetting = [*already, *(c.target for c in changes)]
    return EnforcePlan(tuple(changes), tuple(kept), tuple(already), tuple(missing),
                       stale(result, resetting))


def stale(result: Audit, resetting: Sequence[Target]) -> tuple[Stale, ...]:
    """The servers not covered that ``resetting`` (flavors and images that have, or are
    about to have, ``reset``) would cover if the servers were built now: they keep the
    copies Nova made when they were built, so the list stays the same on a second run
    until they are resized or rebuilt. A flavor reaches a server only through a resize to
    a flavor that has it (the embedded flavor is matched by name); an image through a
    rebuild, which copies its properties again."""
    flavors = {t.name for t in resetting if t.kind == "flavor"}
    images = {t.id for t in resetting if t.kind == "image"}
    found = []
    for row in result.servers:
        server = row.server
        if row.covered or (server.flavor_name not in flavors and server.image_id not in images):
            continue
        now = None if row.image_changed_since_launch and row.effective.source == "image" \
            else row.effective.action
        flavor_after = RESET if server.flavor_name in flavors else row.flavor_value
        image_after = RESET if server.image_id in images else (
            row.image.watchdog_action if row.image else None)
        after = effective_action(flavor_after, image_after)
        if not after.recovers:
            continue
        if after.source == "image":
            name = row.image.name if row.image and row.image.name else server.image_id
            found.append(Stale(server, now, after, "rebuild", f"image {name}"))
        else:
            found.append(Stale(server, now, after, "resize", f"flavor {server.flavor_name}"))
    return tuple(found)
