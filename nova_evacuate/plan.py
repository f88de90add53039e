"""What to evacuate from a failed host, in what order, to where, and whether it is safe to act.

Pure functions over plain data: no I/O, no clock. :mod:`nova_evacuate.engine` gathers the
data from Nova, Glance and Placement (:mod:`nova_evacuate.nova`) and acts on the plan.

Selection follows fence_evacuate's semantics, widened to aggregates and excludes:

* ``instance_filtering`` off: every instance is selected.
* Otherwise, when anything in the cloud is tagged ``evacuable=true`` (an image property, a
  flavor extra spec, or host aggregate metadata), only the instances whose image or flavor
  is tagged, or whose failed host is in a tagged aggregate, are selected; when nothing is
  tagged, every instance is.
* Then an instance whose name matches an ``exclude_names`` pattern, or whose metadata has
  an ``exclude_metadata`` key=value, is left alone and reported.

Servers in ERROR are evacuated like the others (Nova allows it, and on a dead host ERROR is
usually the failure itself); a server in any other state than ACTIVE, SHUTOFF or ERROR, or
with a task under way, has its state reset to ERROR first, since Nova refuses to evacuate it
otherwise. A server that was being evacuated *to* the failed host when it died (its
migration under way: Nova still names the first failed host as its host; one just done is
on the failed host already) is the failed host's to evacuate and is among the inventory's
servers. A server that was only live-migrating to the failed host is still on its source
host and is reported, not evacuated.

What each server comes back as (:data:`FINAL_STATUS`, by its status before the failure; the
engine counts a server done only in this state, on a live host). An evacuation rebuilds the
guest from its disk: whatever it held in memory died with the host.

=============  ========  ==================================================================
before         after     how, and why
=============  ========  ==================================================================
ACTIVE         ACTIVE    Nova (pinned 2.94) rebuilds it running.
SHUTOFF        SHUTOFF   Nova rebuilds it stopped; after a state reset it comes back
                         running and the engine stops it again.
PAUSED         PAUSED    reset, rebuilt (a fresh boot), then paused by the engine: its
                         owner asked it not to run, pausing costs nothing, and ``unpause``
                         still works (it resumes the freshly booted guest).
SUSPENDED      SHUTOFF   reset, rebuilt, then stopped by the engine. Its saved memory was
                         on the failed host; suspending the fresh guest would write a new
                         memory image (a full-memory write on a host taking load) and claim
                         a saved state that no longer exists. Stopped says what is true: not
                         running, and ``start`` boots it from its disk.
ERROR          ACTIVE    deliberately: the rebuild repairs it (on a dead host ERROR is
                         usually the failure itself).
anything else  ACTIVE    (BUILD, REBOOT, RESCUE, ...: a transition under way) reset to ERROR,
                         then as ERROR.
=============  ========  ==================================================================

Ordering: a per-server integer priority in metadata (``priority_key``); higher first, one
phase per priority, each phase starting when the previous one has finished.

Capacity: the surviving hosts' free VCPU, MEMORY_MB and DISK_GB from Placement (inventory
minus reserved, times the allocation ratio, minus usage, within max_unit); every selected
instance is given a target host in order, spare (reserved) hosts first, then the host with
the most free memory. What cannot be placed is the shortfall, reported before anything
moves; those instances are still tried (the scheduler may know better), but the verdict
says so. Without the capacity (``[evacuation] capacity_check = off``, or ``alongside``
while its read is under way: :attr:`Inventory.capacity_known`) no target is named and
there is no shortfall: Nova's scheduler places every server. With ``alongside``, the
servers not sent yet when the read is back get their targets then
(:func:`with_capacity`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass, field, replace

EVACUABLE_KEY = "evacuable"
# Nova's server states an evacuation can start from without a reset (check_instance_state
# of compute.api.API.evacuate): ACTIVE, STOPPED (shown SHUTOFF) and ERROR, with no task.
EVACUABLE_STATUSES = frozenset({"ACTIVE", "SHUTOFF", "ERROR"})
# Evacuation migrations still under way; any other status is an end.
MIGRATION_FINISHED = frozenset({"done", "completed", "failed", "error", "cancelled"})
MIGRATION_SUCCEEDED = frozenset({"done", "completed"})
# The table of the module's docstring: status before the failure → status after evacuation.
FINAL_STATUS = {"ACTIVE": "ACTIVE", "SHUTOFF": "SHUTOFF", "PAUSED": "PAUSED",
                "SUSPENDED": "SHUTOFF", "ERROR": "ACTIVE"}


def final_status(original_status: str) -> str:
    """The status a server that was ``original_status`` comes back in (module docstring)."""
    return FINAL_STATUS.get(original_status, "ACTIVE")


def is_true(value: object) -> bool:
    """An ``evacuable`` value as fence_evacuate reads it: true, in any case."""
    return str(value).strip().lower() in ("true", "1", "yes")


@dataclass(frozen=True)
class Server:
    """One server as the plan needs it (from ``GET /servers/detail`` at 2.94)."""

    id: str
    name: str
    status: str  # ACTIVE, SHUTOFF, ERROR, BUILD, ...
    host: str | None
    task_state: str | None = None
    image_id: str | None = None
    flavor_name: str = ""
    vcpus: int = 0
    ram_mb: int = 0
    disk_gb: int = 0  # root + ephemeral + swap (MiB rounded up)
    flavor_extra_specs: Mapping[str, str] = field(default_factory=dict)
    metadata: Mapping[str, str] = field(default_factory=dict)
    locked: bool = False
    locked_reason: str | None = None
    project_id: str = ""
    vm_state: str = ""  # Nova's own state: "error" shows as status REBUILD while a task runs

    @property
    def stopped(self) -> bool:
        return self.status == "SHUTOFF"


@dataclass(frozen=True)
class Migration:
    """One evacuation migration record (``GET /os-migrations`` at 2.94)."""

    id: int
    server_id: str
    status: str
    source_host: str | None
    dest_host: str | None
    created_at: float  # epoch seconds
    migration_type: str = "evacuation"
    updated_at: float = 0.0  # epoch seconds; 0: never updated since created

    @property
    def finished(self) -> bool:
        return self.status in MIGRATION_FINISHED

    @property
    def succeeded(self) -> bool:
        return self.status in MIGRATION_SUCCEEDED


def latest_migrations(migrations: Iterable[Migration]) -> dict[str, Migration]:
    """Each server's newest evacuation migration (ids grow with time), by server id."""
    latest: dict[str, Migration] = {}
    for m in migrations:
        if m.server_id not in latest or m.id > latest[m.server_id].id:
            latest[m.server_id] = m
    return latest


def rebuilding_onto(host: str, migrations: Iterable[Migration]) -> set[str]:
    """Ids of the servers with an evacuation onto ``host`` still under way when it failed:
    its own evacuation takes them over (Nova still names their first failed host as their
    host), and ``host`` returns only once they are settled. Not only the newest migration
    counts: a request ``host`` took but never started stays queued for it, and runs when
    its nova-compute returns, so a server sent elsewhere since must be settled there first
    (else it would be rebuilt twice at once). One just done is on ``host`` already (Nova
    saves the host before the migration's end); a failed one stays with the engine that
    sent it, which evacuates it again elsewhere."""
    return {m.server_id for m in migrations if m.dest_host == host and not m.finished}


@dataclass(frozen=True)
class RebuildEvent:
    """A compute host's run of an evacuation request (an instance action's event)."""

    host: str
    result: str  # "Success", "Error", or "" while it runs


def left_in_error_by_a_late_request(host: str, server: Server, live: Set[str],
                                    events: Iterable[RebuildEvent]) -> bool:
    """Whether ``host``, back in service, put ``server`` in ERROR by running a rebuild
    request it took before it failed and never started: Nova ran it when the host's
    nova-compute returned, found the server's task changed (it was rebuilt elsewhere since),
    and set it ERROR (its "rebuilding" task left on) although it runs, unharmed, on the live
    host it was evacuated to. Nova's records cannot say more: the server's migration record
    is the one its later evacuation reused."""
    return server.vm_state == "error" and server.task_state in (None, "rebuilding") \
        and server.host in live and server.host != host \
        and any(e.host == host and e.result == "Error" for e in events)


@dataclass(frozen=True)
class Aggregate:
    name: str
    hosts: frozenset[str]
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resources:
    vcpus: int = 0
    ram_mb: int = 0
    disk_gb: int = 0

    def fits(self, need: Resources) -> bool:
        return need.vcpus <= self.vcpus and need.ram_mb <= self.ram_mb and need.disk_gb <= self.disk_gb

    def minus(self, used: Resources) -> Resources:
        return Resources(self.vcpus - used.vcpus, self.ram_mb - used.ram_mb,
                         self.disk_gb - used.disk_gb)


def demand(server: Server) -> Resources:
    return Resources(server.vcpus, server.ram_mb, server.disk_gb)


@dataclass(frozen=True)
class Policy:
    """The ``[evacuation]`` options the plan reads."""

    instance_filtering: bool = True
    exclude_names: Sequence[str] = ()
    exclude_metadata: Sequence[str] = ()  # "key=value"
    priority_key: str = "ha:priority"
    reserved_hosts: Sequence[str] = ()
    reserved_aggregate: str | None = None


@dataclass(frozen=True)
class Inventory:
    """What the plan is made from: everything read before anything moves."""

    host: str
    # on the failed host, evacuated from it since the request, or being evacuated to it
    servers: Sequence[Server]
    tagged_images: frozenset[str] = frozenset()  # ids of images with evacuable=true
    any_tagged_flavor: bool = False  # some flavor in the cloud has evacuable=true
    aggregates: Sequence[Aggregate] = ()
    free: Mapping[str, Resources] = field(default_factory=dict)  # target host → free
    inbound: Sequence[Server] = ()  # servers elsewhere live-migrating to the host
    # False: the capacity was not read (yet), so ``free`` says nothing: an empty ``free``
    # with the capacity known means no host has room at all
    capacity_known: bool = True


@dataclass(frozen=True)
class Planned:
    server: Server
    phase: int  # priority; higher goes first
    target: str | None  # None: the scheduler chooses (nothing had room)
    reset_first: bool  # a task or transitional state blocks evacuation: reset to error first


@dataclass(frozen=True)
class Skipped:
    server: Server
    reason: str


@dataclass(frozen=True)
class Plan:
    host: str
    moves: tuple[Planned, ...]
    skipped: tuple[Skipped, ...]
    shortfall: tuple[str, ...]  # ids that no surviving host has room for
    tagging: str  # how selection was decided, for the report
    # False: made without the capacity: no target named, no shortfall known
    capacity_known: bool = True

    @property
    def capacity_ok(self) -> bool:
        """No shortfall found (True as well when the capacity was not read: see
        :attr:`capacity_known`)."""
        return not self.shortfall

    def phases(self) -> list[list[Planned]]:
        """The moves grouped by priority, highest first, in planned order within each."""
        out: dict[int, list[Planned]] = {}
        for move in self.moves:
            out.setdefault(move.phase, []).append(move)
        return [out[p] for p in sorted(out, reverse=True)]


def _aggregate_tagged(aggregate: Aggregate) -> bool:
    return is_true(aggregate.metadata.get(EVACUABLE_KEY, ""))


def select(inventory: Inventory, policy: Policy) -> tuple[list[Server], list[Skipped], str]:
    """Which servers to evacuate, which to leave (with why), and how that was decided."""
    host_tagged = any(_aggregate_tagged(a) and inventory.host in a.hosts
                      for a in inventory.aggregates)
    anything_tagged = (bool(inventory.tagged_images) or inventory.any_tagged_flavor
                       or any(_aggregate_tagged(a) for a in inventory.aggregates))
    if not policy.instance_filtering:
        tagging = "instance_filtering is off: every instance"
    elif not anything_tagged:
        tagging = "nothing is tagged evacuable: every instance"
    elif host_tagged:
        tagging = f"{inventory.host} is in an aggregate tagged evacuable: every instance"
    else:
        tagging = "only instances with an evacuable image or flavor"
    names = [re.compile(p) for p in policy.exclude_names]
    pairs = [tuple(item.split("=", 1)) for item in policy.exclude_metadata if "=" in item]
    chosen: list[Server] = []
    skipped: list[Skipped] = []
    for server in inventory.servers:
        if policy.instance_filtering and anything_tagged and not host_tagged and not (
                server.image_id in inventory.tagged_images
                or is_true(server.flavor_extra_specs.get(EVACUABLE_KEY, ""))):
            skipped.append(Skipped(server, "not tagged evacuable (image, flavor or aggregate)"))
        elif any(p.search(server.name) for p in names):
            skipped.append(Skipped(server, "name matches exclude_names"))
        elif any(server.metadata.get(k) == v for k, v in pairs):
            skipped.append(Skipped(server, "metadata matches exclude_metadata"))
        else:
            chosen.append(server)
    for server in inventory.inbound:
        skipped.append(Skipped(server, f"was migrating to {inventory.host}; still on"
                                       f" {server.host}, where Nova leaves it"))
    return chosen, skipped, tagging


def priority(server: Server, key: str) -> int:
    try:
        return int(str(server.metadata.get(key, "0")).strip())
    except ValueError:
        return 0  # a malformed priority must not keep a server from being evacuated


def spare_hosts(policy: Policy, aggregates: Iterable[Aggregate]) -> set[str]:
    spare = set(policy.reserved_hosts)
    for aggregate in aggregates:
        if policy.reserved_aggregate and aggregate.name == policy.reserved_aggregate:
            spare |= aggregate.hosts
    return spare


def assign_targets(servers: Sequence[Server], free: Mapping[str, Resources],
                   spare: set[str]) -> tuple[dict[str, str], list[str]]:
    """A target host for each server, in the given order: the first spare host with room,
    else the host with the most free memory that has room. Returns (server id → host, ids
    that fit nowhere)."""
    left = dict(free)
    targets: dict[str, str] = {}
    shortfall: list[str] = []
    for server in servers:
        need = demand(server)
        fitting = [h for h in left if left[h].fits(need)]
        spares = sorted(h for h in fitting if h in spare)
        if spares:
            host = spares[0]
        elif fitting:
            host = max(fitting, key=lambda h: (left[h].ram_mb, left[h].vcpus, h))
        else:
            shortfall.append(server.id)
            continue
        targets[server.id] = host
        left[host] = left[host].minus(need)
    return targets, shortfall


def make_plan(inventory: Inventory, policy: Policy) -> Plan:
    chosen, skipped, tagging = select(inventory, policy)
    # Highest priority first; within a phase, bigger servers first (they are the hardest
    # to place), then by name so a plan reads the same every time.
    ordered = sorted(chosen, key=lambda s: (-priority(s, policy.priority_key),
                                            -s.ram_mb, -s.vcpus, s.name, s.id))
    targets: dict[str, str] = {}
    shortfall: list[str] = []
    if inventory.capacity_known:  # else every server is the scheduler's, none a shortfall
        targets, shortfall = assign_targets(ordered, inventory.free,
                                            spare_hosts(policy, inventory.aggregates))
    moves = tuple(Planned(s, priority(s, policy.priority_key), targets.get(s.id),
                          reset_first=s.status not in EVACUABLE_STATUSES or bool(s.task_state))
                  for s in ordered)
    return Plan(inventory.host, moves, tuple(skipped), tuple(shortfall), tagging,
                capacity_known=inventory.capacity_known)


def with_capacity(plan: Plan, free: Mapping[str, Resources], unsent: Set[str],
                  sent: Iterable[tuple[Server, str | None]], spare: Set[str]) -> Plan:
    """``capacity_check = alongside``: ``plan``, made without the capacity, once its read
    is back. The servers not sent yet (``unsent``, ids) get targets from ``free`` as
    :func:`assign_targets` gives them, in plan order; what fits nowhere among them is the
    shortfall. The others keep their move as it is (sent with no target).

    What the servers already sent (``sent``: each with the host Nova chose, None while
    not known) take is not known exactly: the read may or may not count a claim made
    while it ran. Each one's demand is taken off the host Nova chose, when known (at worst
    counted twice: a server then goes to the scheduler's pick instead); one whose host is
    not known yet is not counted anywhere (at worst a target turns out full: its migration
    fails, and the retry, ``migration_retries``, goes to the scheduler's pick)."""
    left = dict(free)
    for server, host in sent:
        if host is not None and host in left:
            left[host] = left[host].minus(demand(server))
    rest = [m.server for m in plan.moves if m.server.id in unsent]
    targets, shortfall = assign_targets(rest, left, set(spare))
    moves = tuple(replace(m, target=targets.get(m.server.id)) if m.server.id in unsent else m
                  for m in plan.moves)
    return replace(plan, moves=moves, shortfall=tuple(shortfall), capacity_known=True)
