"""The evacuation engine (nova_evacuate/engine.py) over an in-memory Nova.

:class:`FakeNova` implements the Nova port the engine and the ledger call, and behaves as
Nova at the pinned microversion 2.94 does where it matters here: evacuate is refused unless
the server's host is down and the server is ACTIVE, SHUTOFF or ERROR with no task; the
API records an ``accepted`` evacuation migration at once; the rebuild ends (on the next
engine sleep) with the server on its destination, SHUTOFF if it was SHUTOFF, else ACTIVE.
Time is the engine's injected clock, advanced by its sleeps.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from test_fence_actions import Meeting

from nova_evacuate import plan as planning
from nova_evacuate.disks import DiskCheckError, Watcher, holder
from nova_evacuate.engine import (
    DONE,
    FAILED,
    SUBMITTED,
    TIMED_OUT,
    ClaimLost,
    Engine,
    Settings,
    Track,
    lock_reason,
)
from nova_evacuate.ledger import Ledger, State, parse_marker
from nova_evacuate.nova import ComputeService, NovaError, match_service
from nova_evacuate.plan import Migration, Planned, Resources, Server
from nova_evacuate.progress import initial_progress

HOST = "compute1"
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
POLL = 2.0


@dataclass
class FakeNova:
    """Nova in memory: services, servers, evacuation migrations, and a call log."""

    services: dict[str, ComputeService] = field(default_factory=dict)
    vms: dict[str, Server] = field(default_factory=dict)
    migrations: list[Migration] = field(default_factory=list)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    named: list[tuple[str, str | None]] = field(default_factory=list)  # evacuate: (id, host)
    held: set[str] = field(default_factory=set)  # server ids whose rebuild does not finish
    # of the held, those whose rebuild started on its destination (Nova places them there)
    starts: set[str] = field(default_factory=set)
    full: set[str] = field(default_factory=set)  # hosts Placement shows without room
    fail_once: set[str] = field(default_factory=set)  # server ids whose next rebuild errors
    after_step: Any = None  # called after each simulated step (a host dying, say)
    steps: int = 0
    # Migrations never updated since the API created them (a destination named in the
    # request, never started): Nova's changes-since filter (updated_at) does not list them.
    fresh: set[int] = field(default_factory=set)
    image_watchdog: dict[str, str | None] = field(default_factory=dict)  # Glance's images

    # ---------------------------------------------------------------- setup helpers

    def add_host(self, host: str, *, down: bool = False) -> None:
        self.services[host] = ComputeService(f"id-{host}", host, "down" if down else "up",
                                             "enabled", down, None, None)

    def add_server(self, name: str, status: str = "ACTIVE", *, host: str = HOST,
                   task: str | None = None, **kw: Any) -> Server:
        server = Server(id=f"id-{name}", name=name, status=status, host=host, task_state=task,
                        vcpus=1, ram_mb=64, disk_gb=1, **kw)
        self.vms[server.id] = server
        return server

    def kill(self, host: str) -> None:
        """What fence_nova leaves: the service down and forced down."""
        self.services[host] = replace(self.services[host], state="down", forced_down=True)

    def migrate(self, server_id: str, source: str, dest: str | None, status: str) -> Migration:
        m = Migration(len(self.migrations) + 1, server_id, status, source, dest,
                      T0.timestamp())
        self.migrations.append(m)
        return m

    def count(self, op: str) -> int:
        return sum(c[0] == op for c in self.calls)

    # ---------------------------------------------------------------- the port: services

    def compute_service(self, host: str, domain: str | None = None) -> ComputeService:
        return match_service(self.services.values(), host, domain)

    def compute_services(self) -> list[ComputeService]:
        self.calls.append(("compute_services", None))
        return list(self.services.values())

    def disable(self, service_id: str, reason: str | None) -> ComputeService:
        host = service_id.removeprefix("id-")
        self.services[host] = replace(self.services[host], status="disabled",
                                      disabled_reason=reason)
        return self.services[host]

    # ---------------------------------------------------------------- what selection reads

    def aggregates(self) -> list[planning.Aggregate]:
        return []

    def tagged_images(self) -> frozenset[str]:
        return frozenset()

    def image_watchdog_actions(self, image_ids: Any) -> dict[str, str | None]:
        return {i: self.image_watchdog.get(i) for i in image_ids if i in self.image_watchdog}

    def any_flavor_tagged(self) -> bool:
        return False

    def free_resources(self, hosts: Any = None) -> dict[str, Resources]:
        self.calls.append(("free_resources", None))
        return {h: Resources() if h in self.full else Resources(100, 100000, 1000)
                for h in (self.services if hosts is None else hosts)}

    # ---------------------------------------------------------------- servers

    def servers(self, *, host: str | None = None, changes_since: datetime | None = None,
                ids: Any = None) -> list[Server]:
        self.calls.append(("servers", host))
        wanted = set(ids) if ids is not None else None
        return [s for s in self.vms.values() if (host is None or s.host == host)
                and (wanted is None or s.id in wanted)]

    def evacuation_migrations(self, source_host: str | None, since: datetime) -> list[Migration]:
        self.calls.append(("evacuation_migrations", source_host))
        return [m for m in self.migrations if m.id not in self.fresh
                and (source_host is None or m.source_host == source_host)]

    def unstarted_evacuations(self, since: datetime) -> list[Migration]:
        self.calls.append(("unstarted_evacuations", None))
        return [m for m in self.migrations if m.status == "accepted"]

    def lock(self, server_id: str, reason: str) -> None:
        self.calls.append(("lock", server_id))
        self.vms[server_id] = replace(self.vms[server_id], locked=True, locked_reason=reason)

    def unlock(self, server_id: str) -> None:
        self.calls.append(("unlock", server_id))
        self.vms[server_id] = replace(self.vms[server_id], locked=False, locked_reason=None)

    def reset_state(self, server_id: str, state: str) -> None:
        self.calls.append(("reset_state", server_id))
        self.vms[server_id] = replace(self.vms[server_id], status=state.upper(), task_state=None)

    def evacuate(self, server_id: str, host: str | None = None) -> None:
        self.calls.append(("evacuate", server_id))
        self.named.append((server_id, host))
        server = self.vms[server_id]
        source = self.services[server.host or ""]
        if source.state == "up" and not source.forced_down:
            raise NovaError("refused", f"compute service of {server.host} is still in use", 400)
        if server.status not in ("ACTIVE", "SHUTOFF", "ERROR") or server.task_state:
            raise NovaError("refused", f"cannot 'evacuate' while in {server.status}", 409)
        m = self.migrate(server_id, server.host or "", host, "accepted")
        if host is not None:
            self.fresh.add(m.id)
        self.vms[server_id] = replace(server, task_state="rebuilding")

    def stop(self, server_id: str) -> None:
        self.calls.append(("stop", server_id))
        self.vms[server_id] = replace(self.vms[server_id], status="SHUTOFF")

    def pause(self, server_id: str) -> None:
        self.calls.append(("pause", server_id))
        self.vms[server_id] = replace(self.vms[server_id], status="PAUSED")

    # ---------------------------------------------------------------- time passing

    def live(self, host: str | None) -> bool:
        service = self.services.get(host or "")
        return service is not None and service.state == "up" and not service.forced_down

    def step(self) -> None:
        """Every rebuild under way and not held gets a destination if it had none, then
        errors (``fail_once``: the server left in ERROR on its host) or, on a live host,
        finishes (Nova 2.94: SHUTOFF stays SHUTOFF, ACTIVE and ERROR come back ACTIVE)."""
        self.steps += 1
        for i, m in enumerate(self.migrations):
            if m.status != "accepted":
                continue
            if m.server_id in self.held:
                if m.server_id in self.starts and self.live(m.dest_host):
                    self.fresh.discard(m.id)  # the destination started: record updated
                    self.migrations[i] = replace(m, status="pre-migrating")
                    self.vms[m.server_id] = replace(self.vms[m.server_id], host=m.dest_host)
                continue
            self.fresh.discard(m.id)  # the destination starts: the record is updated
            if m.dest_host is None:  # the scheduler picks
                m = self.migrations[i] = replace(m, dest_host=min(filter(self.live,
                                                                         self.services)))
            server = self.vms[m.server_id]
            if m.server_id in self.fail_once:
                self.fail_once.discard(m.server_id)
                self.vms[m.server_id] = replace(server, status="ERROR", task_state=None)
                self.migrations[i] = replace(m, status="error")
            elif self.live(m.dest_host):
                status = "SHUTOFF" if server.status == "SHUTOFF" else "ACTIVE"
                self.vms[m.server_id] = replace(server, host=m.dest_host, status=status,
                                                task_state=None)
                self.migrations[i] = replace(m, status="done")
        if self.after_step:
            self.after_step(self)


@dataclass
class Clock:
    t: float = 0.0

    def __call__(self) -> float:
        return self.t

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.t)


@pytest.fixture
def nova() -> FakeNova:
    fake = FakeNova()
    fake.add_host(HOST, down=True)
    for host in ("compute2", "compute3", "compute4"):
        fake.add_host(host)
    return fake


@pytest.fixture
def timeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "timeline.jsonl"
    monkeypatch.setenv("OPENSTACK_HA_TIMELINE", str(path))
    return path


def events(path: Path, *names: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [e for e in lines if e["event"] in names]


def engine(nova: FakeNova, clock: Clock, **settings: Any) -> Engine:
    def sleep(seconds: float) -> None:
        clock.t += seconds
        nova.step()

    return Engine(nova, Ledger(nova, clock=clock.now),  # type: ignore[arg-type]
                  Settings(poll_interval=POLL, **settings), by="ctl-1/1", clock=clock,
                  sleep=sleep, now=clock.now)


def by_name(report: Any) -> dict[str, Any]:
    return {t.server.name: t for t in report.tracks}


# ---------------------------------------------------------------------------- (4) the timeline


def test_instance_done_is_recorded_under_the_failed_host_after_a_resume(nova, timeline):
    """An earlier run, killed: 'moved' is already on compute2, 'moving' is under way, 'left'
    was never sent. The resuming run records every instance under compute1."""
    moved = nova.add_server("moved", host="compute2", locked=True,
                            locked_reason=lock_reason(HOST, "ACTIVE"))
    nova.migrate(moved.id, HOST, "compute2", "done")
    moving = nova.add_server("moving", task="rebuilding", locked=True,
                             locked_reason=lock_reason(HOST, "ACTIVE"))
    nova.migrate(moving.id, HOST, "compute3", "accepted")
    nova.add_server("left")
    clock = Clock()
    ledger = Ledger(nova, clock=clock.now)  # type: ignore[arg-type]
    ledger.request(HOST, T0)
    ledger.claim(HOST, "ctl-2/77", T0, timedelta(seconds=60))  # the run that was killed
    clock.t = 600.0  # its claim has long expired

    report = engine(nova, clock).run(HOST)

    assert report.ok and {t.state for t in report.tracks} == {DONE}
    done = events(timeline, "instance_done")
    assert sorted(e["name"] for e in done) == ["left", "moved", "moving"]
    assert {e["host"] for e in done} == {HOST}
    assert {e["name"]: e["dest"] for e in done}["moved"] == "compute2"
    # resumed, not sent again
    assert nova.count("evacuate") == 1 and len(nova.migrations) == 3
    assert not any(s.locked for s in nova.vms.values())


def test_the_report_and_the_timeline_carry_each_servers_effective_watchdog(nova, timeline):
    """As Nova computes it: the image's property over the embedded flavor's extra spec."""
    nova.image_watchdog = {"img-reset": "reset", "img-plain": None}
    reset = {"hw:watchdog_action": "reset"}
    nova.add_server("by-flavor", image_id="img-plain", flavor_extra_specs=reset)
    nova.add_server("by-image", image_id="img-reset")
    nova.add_server("image-wins", image_id="img-reset",
                    flavor_extra_specs={"hw:watchdog_action": "poweroff"})
    nova.add_server("none", image_id="img-plain")
    nova.add_server("from-volume", flavor_extra_specs={"hw:watchdog_action": "pause"})
    nova.add_server("image-gone", image_id="img-deleted", flavor_extra_specs=reset)
    report = engine(nova, Clock()).run(HOST)
    wanted = {"by-flavor": "reset", "by-image": "reset", "image-wins": "reset",
              "none": "disabled", "from-volume": "pause", "image-gone": "reset"}
    assert {i["name"]: i["watchdog"] for i in report.as_dict()["instances"]} == wanted
    assert {e["name"]: e["watchdog"] for e in events(timeline, "instance_done")} == wanted


def test_a_watchdog_read_that_fails_is_reported_unknown_and_moves_nothing_less(nova, timeline):
    def glance_down(image_ids: Any) -> dict[str, str | None]:
        raise NovaError("unreachable", "list images by id: cannot reach the cloud")

    nova.image_watchdog_actions = glance_down  # type: ignore[method-assign]
    nova.add_server("vm", image_id="img")
    report = engine(nova, Clock()).run(HOST)
    assert report.ok and report.as_dict()["instances"][0]["watchdog"] == "unknown"
    assert events(timeline, "instance_done")[0]["watchdog"] == "unknown"


def test_a_watchdog_read_that_hangs_is_waited_for_once_and_briefly(nova, timeline):
    released = threading.Event()

    def glance_hangs(image_ids: Any) -> dict[str, str | None]:
        released.wait(30)
        return {}

    nova.image_watchdog_actions = glance_hangs  # type: ignore[method-assign]
    for i in range(5):
        nova.add_server(f"vm{i}", image_id="img")
    started = time.monotonic()
    try:
        report = engine(nova, Clock()).run(HOST)
        assert time.monotonic() - started < 10  # one wait of about a second, not one each
        assert report.ok and {e["watchdog"] for e in events(timeline, "instance_done")} == {
            "unknown"}
    finally:
        released.set()


def test_a_request_an_earlier_run_sent_and_no_host_started_yet_is_not_sent_again(nova):
    """The killed run's last request: accepted, never updated, so changes-since misses it."""
    sent = nova.add_server("sent", task="rebuilding", locked=True,
                           locked_reason=lock_reason(HOST, "ACTIVE"))
    nova.fresh.add(nova.migrate(sent.id, HOST, "compute3", "accepted").id)
    clock = Clock()
    Ledger(nova, clock=clock.now).request(HOST, T0)  # type: ignore[arg-type]

    report = engine(nova, clock).run(HOST)

    assert report.ok and nova.count("evacuate") == 0 and len(nova.migrations) == 1
    assert nova.vms[sent.id].host == "compute3"


def test_a_rebuild_that_finishes_while_a_resuming_run_reads_nova_is_not_sent_again(nova):
    """Seen in the lab: the killed run's last rebuild finished between the resuming run's
    reads. Nova saves the server's new host before it marks the migration done, so the
    migrations are read first: one done there has its server already moved."""
    moving = nova.add_server("moving", task="rebuilding", locked=True,
                             locked_reason=lock_reason(HOST, "ACTIVE"))
    nova.migrate(moving.id, HOST, "compute3", "accepted")
    nova.held.add(moving.id)

    def then_the_rebuild_ends(read: Any) -> Any:
        def first_read(*args: Any, **kw: Any) -> Any:
            answer = read(*args, **kw)
            if moving.id in nova.held:  # whichever of the two reads comes first
                nova.held.discard(moving.id)
                nova.step()
            return answer
        return first_read

    nova.servers = then_the_rebuild_ends(nova.servers)  # type: ignore[method-assign]
    nova.evacuation_migrations = then_the_rebuild_ends(  # type: ignore[method-assign]
        nova.evacuation_migrations)
    clock = Clock()
    Ledger(nova, clock=clock.now).request(HOST, T0)  # type: ignore[arg-type]

    report = engine(nova, clock).run(HOST)

    assert report.ok and nova.count("evacuate") == 0 and len(nova.migrations) == 1
    assert nova.vms[moving.id].host == "compute3"


# ---------------------------------------------------------------------------- (5) final states

ROWS = [  # (status before, task, status after): the table of plan.py's docstring
    ("ACTIVE", None, "ACTIVE"),
    ("SHUTOFF", None, "SHUTOFF"),
    ("PAUSED", None, "PAUSED"),
    ("SUSPENDED", None, "SHUTOFF"),
    ("ERROR", None, "ACTIVE"),
    ("BUILD", "spawning", "ACTIVE"),  # "anything else"
]


def docstring_table() -> dict[str, str]:
    """The 'before → after' rows of the table in plan.py's docstring."""
    lines = (planning.__doc__ or "").splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("=====")]
    body = "\n".join(lines[rules[1] + 1:rules[2]])
    return dict(re.findall(r"^(\S+(?: else)?)\s+([A-Z]+)\s", body, re.MULTILINE))


def test_the_docstring_table_is_the_code_and_the_rows_tested():
    table = docstring_table()
    assert table == {**planning.FINAL_STATUS, "anything else": "ACTIVE"}
    assert {before if before in table else "anything else": after
            for before, _, after in ROWS} == table
    assert planning.final_status("REBOOT") == "ACTIVE"


@pytest.mark.parametrize(("before", "task", "after"), ROWS)
def test_each_server_comes_back_in_the_state_the_table_says(nova, timeline, before, task, after):
    server = nova.add_server("vm", before, task=task)

    report = engine(nova, Clock()).run(HOST)

    (track,) = report.tracks
    assert (track.state, track.reason) == (DONE, f"{after} on {track.dest}")
    now = nova.vms[server.id]
    assert now.status == after and now.host in ("compute2", "compute3", "compute4")
    assert not now.locked and report.ok
    reset = before not in ("ACTIVE", "SHUTOFF", "ERROR") or task is not None
    assert nova.count("reset_state") == int(reset)
    # the engine acts after the rebuild only where Nova did not keep the state
    assert nova.count("pause") == int(after == "PAUSED")
    assert nova.count("stop") == int(after == "SHUTOFF" and before != "SHUTOFF")


def test_a_server_that_comes_back_in_another_state_is_failed_not_done(nova, timeline):
    server = nova.add_server("vm", "ACTIVE")

    def shut_off(fake: FakeNova) -> None:  # e.g. Nova at 2.95, which lands servers stopped
        fake.vms[server.id] = replace(fake.vms[server.id], status="SHUTOFF")

    nova.after_step = shut_off
    report = engine(nova, Clock()).run(HOST)
    (track,) = report.tracks
    assert track.state == FAILED and "came back SHUTOFF" in track.reason
    assert "not ACTIVE" in track.reason and not report.ok


# ---------------------------------------------------------------------------- (3) watched targets


def test_a_finished_migration_onto_a_live_destination_is_done(nova, timeline):
    for i in range(5):
        nova.add_server(f"vm{i}")
    clock = Clock()

    report = engine(nova, clock).run(HOST)

    assert report.ok and report.count(DONE) == 5
    assert all(t.reason == f"ACTIVE on {t.dest}" for t in report.tracks)
    assert parse_marker(nova.services[HOST].disabled_reason).state is State.DONE
    # per poll: one migration list and at most one service list, never one GET per server
    polls = nova.steps
    assert nova.count("evacuation_migrations") == polls + 1  # + the inventory
    assert nova.count("compute_services") <= polls + 2  # + the brake and the inventory
    assert nova.count("servers") <= polls + 2


# ---------------------------------------------------------------------------- [storage]


@dataclass
class FakeDisks:
    """Ceph's view of each server's disk: its watchers and the blocklist (nova_evacuate/disks.py's
    reader, in memory); ``down``: Ceph does not answer."""

    watchers: dict[str, list[Watcher]] = field(default_factory=dict)
    blocklisted: list[str] = field(default_factory=list)
    down: bool = False
    asked: list[str] = field(default_factory=list)

    def held_by(self, server_id: str, failed_addresses: Any) -> Watcher | None:
        self.asked.append(server_id)
        if self.down:
            raise DiskCheckError("ceph gave no answer within 10s")
        return holder(self.watchers.get(server_id, []), self.blocklisted, failed_addresses)


def test_a_disk_the_failed_host_still_holds_is_not_rebuilt_and_the_others_are(nova, timeline):
    held = nova.add_server("held")
    blocked = nova.add_server("blocked")
    for i in range(3):
        nova.add_server(f"vm{i}")
    other = nova.add_server("other")
    disks = FakeDisks(watchers={
        held.id: [Watcher("10.0.1.11:0/42")],  # compute1's hypervisor, still writing
        blocked.id: [Watcher("10.0.2.11:0/7")],  # compute1's, blocklisted by the fence
        other.id: [Watcher("10.0.1.12:0/9")],  # someone else's client: not compute1
    }, blocklisted=["10.0.2.11:0/0"])
    clock = Clock()

    report = engine(nova, clock, disks=disks,
                    storage_map={HOST: ("10.0.1.11", "10.0.2.11")}).run(HOST)

    tracks = by_name(report)
    assert tracks["held"].state == FAILED
    assert tracks["held"].reason == f"still held by {HOST} (10.0.1.11:0/42)"
    assert {n: t.state for n, t in tracks.items() if n != "held"} == dict.fromkeys(
        ["blocked", "vm0", "vm1", "vm2", "other"], DONE)
    assert ("evacuate", held.id) not in nova.calls  # never rebuilt
    # one read each; the held disk again every 2 s while Ceph may still drop a dead watch
    asked = Counter(disks.asked)
    assert {i: n for i, n in asked.items() if i != held.id} == dict.fromkeys(
        (t.server.id for t in report.tracks if t.server.id != held.id), 1)
    assert 45 // 2 <= asked[held.id] <= 45 // 2 + 2  # as the polls fall
    assert not nova.vms[held.id].locked  # unlocked at its end
    failed = events(timeline, "instance_failed")
    assert [(e["name"], e["reason"]) for e in failed] == [("held", tracks["held"].reason)]
    assert parse_marker(nova.services[HOST].disabled_reason).state is State.FAILED


def test_when_ceph_cannot_say_who_holds_a_disk_nothing_is_rebuilt(nova, timeline):
    for i in range(3):
        nova.add_server(f"vm{i}")
    clock = Clock()

    report = engine(nova, clock, disks=FakeDisks(down=True),
                    storage_map={HOST: ("10.0.1.11",)}).run(HOST)

    assert report.count(FAILED) == 3 and nova.count("evacuate") == 0
    assert all(t.reason.startswith("its disk could not be checked (ceph gave no answer")
               for t in report.tracks)


def test_a_host_missing_from_the_storage_map_counts_every_watcher(nova, timeline):
    vm = nova.add_server("vm")
    disks = FakeDisks(watchers={vm.id: [Watcher("192.0.2.9:0/1")]})

    report = engine(nova, Clock(), disks=disks, storage_map={}).run(HOST)

    assert report.tracks[0].state == FAILED
    assert report.tracks[0].reason == f"still held by {HOST} (192.0.2.9:0/1)"


@pytest.mark.parametrize("when", ["during the rebuild", "right after it"])
def test_a_destination_that_dies_fails_its_servers_at_once_naming_it(nova, timeline, when):
    doomed = nova.add_server("doomed")
    nova.add_server("fine")
    clock = Clock()
    run = engine(nova, clock, instance_timeout=600)
    plan, _ = run.plan(HOST)
    target = {m.server.name: m.target for m in plan.moves}["doomed"]
    assert target != {m.server.name: m.target for m in plan.moves}["fine"]
    if when == "during the rebuild":
        nova.held.add(doomed.id)
        nova.starts.add(doomed.id)

    def die(fake: FakeNova) -> None:
        if fake.steps == 1:  # the first poll after the requests went out
            fake.kill(target)

    nova.after_step = die
    report = run.run(HOST)

    tracks = by_name(report)
    assert tracks["fine"].state == DONE
    assert tracks["doomed"].state == FAILED
    assert tracks["doomed"].reason.startswith(f"destination {target} died during the rebuild")
    assert clock.t <= 2 * POLL, "failed at the first poll that saw it, not at the timeout"
    assert not report.ok and parse_marker(nova.services[HOST].disabled_reason).state is State.FAILED
    (failed,) = events(timeline, "instance_failed")
    assert (failed["host"], failed["name"], failed["dest"]) == (HOST, "doomed", target)
    assert not nova.vms[doomed.id].locked


def test_a_destination_that_dies_before_the_rebuild_starts_is_replaced(nova, timeline):
    """The request was accepted, the destination hung before starting it (its migration
    still as created, which changes-since never lists) and died: the server is still on the
    failed host, so this run sends it elsewhere, after a state reset, at once."""
    doomed = nova.add_server("doomed", "SHUTOFF")
    nova.add_server("fine")
    clock = Clock()
    run = engine(nova, clock, instance_timeout=600)
    plan, _ = run.plan(HOST)
    target = {m.server.name: m.target for m in plan.moves}["doomed"]
    nova.held.add(doomed.id)

    def die(fake: FakeNova) -> None:
        if fake.steps == 1:
            fake.kill(target)
            fake.held.clear()  # what is sent next is rebuilt

    nova.after_step = die
    report = run.run(HOST)

    assert report.ok, [(t.server.name, t.reason) for t in report.tracks]
    now = nova.vms[doomed.id]
    assert now.host not in (HOST, target) and now.status == "SHUTOFF" and not now.locked
    assert nova.count("reset_state") == 1
    assert clock.t <= 4 * POLL, "sent again at the first poll that saw it, not at the timeout"
    assert not events(timeline, "instance_failed")


@pytest.mark.parametrize("comes_back", [True, False])
def test_a_destination_down_by_its_heartbeat_alone_is_waited_for(nova, timeline, comes_back):
    """Seen on the lab: a host just back from its own recovery shows up by its old heartbeat,
    is picked, then shows down until its new nova-compute reports. It may still run the
    rebuild, so its servers are neither failed nor sent elsewhere: done once it reports,
    else timed out; only a forced-down (fenced) destination counts as dead."""
    slow = nova.add_server("slow")
    nova.add_server("fine")
    clock = Clock()
    run = engine(nova, clock, instance_timeout=60)
    plan, _ = run.plan(HOST)
    target = {m.server.name: m.target for m in plan.moves}["slow"]
    nova.held.add(slow.id)

    def heartbeat(fake: FakeNova) -> None:
        if fake.steps == 1:
            fake.services[target] = replace(fake.services[target], state="down")
        if fake.steps == 5 and comes_back:
            fake.services[target] = replace(fake.services[target], state="up")
            fake.held.clear()

    nova.after_step = heartbeat
    report = run.run(HOST)

    tracks = by_name(report)
    assert tracks["fine"].state == DONE
    assert nova.count("evacuate") == 2 and nova.count("reset_state") == 0
    assert not any("died" in e["reason"] for e in events(timeline, "instance_failed"))
    if comes_back:
        assert report.ok and nova.vms[slow.id].host == target
    else:
        assert tracks["slow"].state == TIMED_OUT, tracks["slow"].reason
        assert nova.vms[slow.id].host == HOST


def test_the_dead_destinations_evacuation_takes_over_what_was_rebuilding_onto_it(nova, timeline):
    """compute1 fails; 'arrived' lands on compute2 and is done; 'stuck' is still being
    rebuilt there when compute2 dies. compute2's own evacuation moves both, once."""
    arrived = nova.add_server("arrived")
    stuck = nova.add_server("stuck", "SHUTOFF")
    nova.add_host("compute5")  # two of five down: under the brake's fraction
    nova.full = {"compute3", "compute4", "compute5"}  # the first run targets compute2 only
    nova.held.add(stuck.id)
    nova.starts.add(stuck.id)
    nova.after_step = lambda fake: fake.steps == 2 and fake.kill("compute2")
    clock = Clock()

    report = engine(nova, clock).run(HOST)

    assert by_name(report)["arrived"].state == DONE
    assert "destination compute2 died" in by_name(report)["stuck"].reason
    # Nova's view: the rebuild had started there
    assert nova.vms[stuck.id].host == "compute2" and nova.vms[stuck.id].task_state
    nova.full, nova.held, nova.starts, nova.after_step = set(), set(), set(), None

    second = engine(nova, clock).run("compute2")

    assert second.ok and {t.server.name for t in second.tracks} == {"arrived", "stuck"}
    now = nova.vms
    assert now[arrived.id].host not in (HOST, "compute2") and now[arrived.id].status == "ACTIVE"
    # a stopped server that was mid-rebuild is still stopped where it lands
    assert now[stuck.id].host not in (HOST, "compute2") and now[stuck.id].status == "SHUTOFF"
    per_server = [m.server_id for m in nova.migrations]
    assert per_server.count(arrived.id) == 2 and per_server.count(stuck.id) == 2
    done = [(e["host"], e["name"]) for e in events(timeline, "instance_done")]
    assert sorted(done) == [(HOST, "arrived"), ("compute2", "arrived"), ("compute2", "stuck")]


def test_a_host_whose_queued_request_was_sent_on_is_evacuated_only_once_that_settles(
        nova, timeline):
    """compute2 took 'resent' while it hung, never started it, and died; compute1's run sent
    it on to compute3. compute2's queued request runs when its nova-compute returns, so
    compute2's evacuation (after which it returns) follows 'resent' to its end there, and
    sends nothing: Nova never lists the queued request under changes-since."""
    resent = nova.add_server("resent", task="rebuilding", locked=True,
                             locked_reason=lock_reason(HOST, "ACTIVE"))
    queued = nova.migrate(resent.id, HOST, "compute2", "accepted")
    nova.fresh.add(queued.id)
    nova.held.add(resent.id)  # the queued request never runs: compute2 is dead
    nova.kill("compute2")
    sent_on = nova.migrate(resent.id, HOST, "compute3", "accepted")
    nova.fresh.add(sent_on.id)  # not started yet either: changes-since lists neither
    clock = Clock()

    def settles_later(fake: FakeNova) -> None:
        if fake.steps == 3:  # compute3 finishes the rebuild: the queued one stays queued
            fake.fresh.discard(sent_on.id)
            fake.migrations[sent_on.id - 1] = replace(sent_on, status="done")
            fake.vms[resent.id] = replace(fake.vms[resent.id], host="compute3",
                                          task_state=None)

    nova.after_step = settles_later
    report = engine(nova, clock).run("compute2")

    assert report.ok and [t.server.name for t in report.tracks] == ["resent"]
    assert nova.count("evacuate") == 0 and nova.steps >= 3, "followed to its end, not re-sent"
    assert by_name(report)["resent"].reason == "ACTIVE on compute3"


@pytest.mark.parametrize("first_hosts_evacuation", ["running", "over", "ends-leaving-it"])
def test_a_request_the_dead_host_never_started_is_left_to_the_first_hosts_evacuation(
        nova, timeline, first_hosts_evacuation):
    """Seen in the lab: compute2 dies with 'waiting' sent to it from compute1 and never
    started. While compute1's evacuation runs it sends 'waiting' on elsewhere, so compute2's
    follows that, and neither resets nor sends it (that reset broke the rebuild under way).
    With compute1's evacuation over (before or while this one waits) and the server left on
    compute1, compute2's sends it itself."""
    waiting = nova.add_server("waiting", task="rebuilding", locked=True,
                              locked_reason=lock_reason(HOST, "ACTIVE"))
    nova.fresh.add(nova.migrate(waiting.id, HOST, "compute2", "accepted").id)
    nova.kill("compute2")  # dead: its queued request never runs
    clock = Clock()
    ledger = Ledger(nova, clock=clock.now)  # type: ignore[arg-type]
    ledger.request(HOST, T0)
    if first_hosts_evacuation == "running":
        ledger.claim(HOST, "ctl-2/7", T0, timedelta(seconds=600))

        def compute1_sends_it_on(fake: FakeNova) -> None:
            if fake.steps == 2:  # as seen in the lab: the server lands on compute3 while
                # the migration of compute1's second request stays as created, never listed
                fake.fresh.add(fake.migrate(waiting.id, HOST, None, "accepted").id)
                fake.held.add(waiting.id)
                fake.vms[waiting.id] = replace(fake.vms[waiting.id], host="compute3",
                                               task_state=None)

        nova.after_step = compute1_sends_it_on
    elif first_hosts_evacuation == "ends-leaving-it":
        ledger.claim(HOST, "ctl-2/7", T0, timedelta(seconds=600))

        def compute1_gives_up(fake: FakeNova) -> None:
            if fake.steps == 2:
                ledger.finish(HOST, False, 0, 1, by="ctl-2/7", now=T0)

        nova.after_step = compute1_gives_up
    else:
        ledger.claim(HOST, "ctl-2/7", T0, timedelta(seconds=600))
        ledger.finish(HOST, False, 0, 1, by="ctl-2/7", now=T0)

    report = engine(nova, clock).run("compute2")

    assert report.ok, [(t.server.name, t.reason) for t in report.tracks]
    assert nova.vms[waiting.id].host not in (HOST, "compute2")
    sent_from_here = nova.count("evacuate"), nova.count("reset_state")
    assert sent_from_here == ((0, 0) if first_hosts_evacuation == "running" else (1, 1))
    if first_hosts_evacuation == "ends-leaving-it":
        assert clock.t >= 2 * POLL, "sent only once compute1's evacuation was over"


def test_a_failed_rebuild_is_sent_again_and_its_first_destination_dying_does_not_fail_it(
        nova, timeline):
    server = nova.add_server("vm")
    nova.fail_once.add(server.id)
    first: list[str] = []

    def then(fake: FakeNova) -> None:
        if fake.steps == 1:  # the first rebuild errored: its host dies, the retry waits
            first.append(fake.migrations[0].dest_host or "")
            fake.kill(first[0])
            fake.held.add(server.id)
        elif fake.steps == 3:
            fake.held.clear()

    nova.after_step = then
    report = engine(nova, Clock()).run(HOST)

    (track,) = report.tracks
    assert report.ok and track.attempts == 2, track.reason
    assert track.dest not in (HOST, first[0]) and nova.vms[server.id].status == "ACTIVE"
    assert [m.status for m in nova.migrations] == ["error", "done"]


def test_a_destination_not_known_to_be_live_counts_nothing_done(nova, timeline):
    """The service list cannot be read: no server counts as done until it can."""
    nova.add_server("vm")
    real = nova.compute_services
    reads = {"n": 0}

    def flaky() -> list[ComputeService]:
        reads["n"] += 1
        if 2 <= reads["n"] <= 3:  # after the one read before the claim: the first two polls
            raise NovaError("unreachable", "list compute services: cannot reach the cloud")
        return real()

    nova.compute_services = flaky  # type: ignore[method-assign]
    clock = Clock()
    report = engine(nova, clock).run(HOST)
    assert report.ok and clock.t == 3 * POLL


def test_a_host_takes_over_only_the_live_evacuations_onto_it():
    def m(mid: int, sid: str, status: str, dest: str, source: str = HOST) -> Migration:
        return Migration(mid, sid, status, source, dest, 0.0)

    migrations = [m(1, "under-way", "rebuilding", "compute2"), m(2, "landed", "done", "compute2"),
                  m(3, "failed-there", "error", "compute2"),
                  m(4, "sent-on", "done", "compute2"), m(5, "sent-on", "accepted", "compute3"),
                  m(6, "elsewhere", "accepted", "compute3"),
                  # taken by compute2 while it hung, then sent on to compute3: still queued
                  m(7, "resent", "accepted", "compute2"), m(8, "resent", "rebuilding", "compute3")]
    # "landed" is on compute2 already: Nova names it there, the inventory lists it anyway
    assert planning.rebuilding_onto("compute2", migrations) == {"under-way", "resent"}


# ---------------------------------------------------------------------------- (6) retries, timeouts


def answers_lost(nova: FakeNova, count: int, *, nova_took_it: bool) -> None:
    """The next ``count`` evacuate requests get no answer: Nova took each one first
    (``nova_took_it``), or never saw it."""
    real, left = nova.evacuate, [count]

    def evacuate(server_id: str, host: str | None = None) -> None:
        if left[0] <= 0:
            return real(server_id, host)
        left[0] -= 1
        if nova_took_it:
            real(server_id, host)
        else:
            nova.calls.append(("evacuate", server_id))
        raise NovaError("unreachable", "evacuate: cannot reach the cloud")

    nova.evacuate = evacuate  # type: ignore[method-assign]


def test_a_request_whose_answer_was_lost_is_followed_not_sent_again(nova, timeline):
    server = nova.add_server("vm")
    answers_lost(nova, 1, nova_took_it=True)

    report = engine(nova, Clock()).run(HOST)

    assert report.ok and nova.count("evacuate") == 1 and len(nova.migrations) == 1
    assert nova.vms[server.id].host != HOST and not nova.vms[server.id].locked


def test_a_request_nova_never_saw_is_sent_again_once_no_migration_shows_it(nova, timeline):
    server = nova.add_server("vm")
    answers_lost(nova, 1, nova_took_it=False)
    clock = Clock()

    report = engine(nova, clock).run(HOST)

    assert report.ok and nova.count("evacuate") == 2 and len(nova.migrations) == 1
    assert clock.t >= 2.0, "not before the backoff"
    assert nova.vms[server.id].host != HOST and not nova.vms[server.id].locked


def test_api_failures_beyond_api_retries_fail_the_server_and_unlock_it(nova, timeline):
    server = nova.add_server("vm")
    answers_lost(nova, 99, nova_took_it=False)

    report = engine(nova, Clock(), api_retries=2).run(HOST)

    (track,) = report.tracks
    assert (track.state, track.reason) == (
        FAILED, "API failed 3 times: evacuate: cannot reach the cloud")
    assert nova.count("evacuate") == 3 and not nova.vms[server.id].locked
    assert not report.ok and parse_marker(nova.services[HOST].disabled_reason).state is State.FAILED
    (failed,) = events(timeline, "instance_failed")
    assert (failed["name"], failed["state"], failed["reason"]) == ("vm", "failed", track.reason)


def test_a_refused_request_fails_the_server_at_once(nova, timeline):
    server = nova.add_server("vm")

    def refuse(server_id: str, host: str | None = None) -> None:
        nova.calls.append(("evacuate", server_id))
        raise NovaError("refused", "cannot 'evacuate' while in task_state rebuilding", 409)

    nova.evacuate = refuse  # type: ignore[method-assign]
    clock = Clock()
    report = engine(nova, clock).run(HOST)

    (track,) = report.tracks
    assert (track.state, track.reason) == (
        FAILED, "Nova refused the evacuation: cannot 'evacuate' while in task_state rebuilding")
    assert nova.count("evacuate") == 1 and clock.t == 0.0, "not asked again, not polled"
    assert not nova.vms[server.id].locked and not report.ok


def test_a_failed_migration_with_no_retry_left_fails_the_server(nova, timeline):
    server = nova.add_server("vm")
    nova.fail_once.add(server.id)

    report = engine(nova, Clock(), migration_retries=0).run(HOST)

    (track,) = report.tracks
    assert (track.state, track.reason) == (FAILED, "evacuation migration error (1 attempts)")
    assert nova.count("evacuate") == 1 and not nova.vms[server.id].locked


def test_a_server_unfinished_after_the_instance_timeout_is_timed_out(nova, timeline):
    stuck = nova.add_server("stuck")
    nova.add_server("fine")
    nova.held.add(stuck.id)  # its destination never starts the rebuild
    clock = Clock()

    report = engine(nova, clock, instance_timeout=10).run(HOST)

    tracks = by_name(report)
    assert tracks["fine"].state == DONE
    assert (tracks["stuck"].state, tracks["stuck"].reason) == ("timed out", "not finished after 10s")
    assert 10 < clock.t <= 10 + 2 * POLL and not nova.vms[stuck.id].locked
    assert (report.count("timed out"), report.as_dict()["timed_out"]) == (1, 1)
    (failed,) = events(timeline, "instance_failed")
    assert (failed["name"], failed["state"]) == ("stuck", "timed out")
    assert parse_marker(nova.services[HOST].disabled_reason).state is State.FAILED



# ---------------------------------------------------------------------------- capacity_check


def test_capacity_check_off_never_reads_the_capacity_and_names_no_target(nova, timeline):
    for i in range(3):
        nova.add_server(f"vm{i}")
    nova.full = {"compute2", "compute3", "compute4"}  # read, this would be a shortfall
    run = engine(nova, Clock(), capacity_check="off")

    plan, _ = run.plan(HOST)  # the dry run's plan
    report = run.run(HOST)

    assert nova.count("free_resources") == 0
    assert not plan.capacity_known and plan.shortfall == () and plan.capacity_ok
    assert all(m.target is None for m in plan.moves)
    assert report.ok and report.count(DONE) == 3
    assert [host for _, host in nova.named] == [None, None, None]
    assert report.as_dict()["shortfall"] == [] and report.as_dict()["capacity_checked"] is False


def test_capacity_check_before_plans_every_target_before_the_first_evacuate(nova, timeline):
    for i in range(3):
        nova.add_server(f"vm{i}")

    report = engine(nova, Clock()).run(HOST)  # the default

    assert report.ok and nova.count("free_resources") == 1
    assert nova.calls.index(("free_resources", None)) < [c[0] for c in nova.calls].index("evacuate")
    assert all(host in ("compute2", "compute3", "compute4") for _, host in nova.named)
    assert report.as_dict()["capacity_checked"] is True


def test_a_dry_run_with_capacity_check_alongside_reads_the_capacity_first(nova):
    nova.add_server("vm")
    nova.full = {"compute2", "compute3", "compute4"}

    plan, _ = engine(nova, Clock(), capacity_check="alongside").plan(HOST)

    assert nova.count("free_resources") == 1
    assert plan.capacity_known and plan.shortfall == ("id-vm",)


def test_alongside_the_first_evacuations_go_out_while_the_capacity_is_read(nova, timeline):
    """The capacity read blocks until the first evacuate request went out: an engine that
    waits for the read before evacuating finds nothing sent (after the timeout) and fails
    here. The servers not sent when the read is back get their targets from it."""
    for i in range(6):
        nova.add_server(f"vm{i}")
    evacuated, read_back = threading.Event(), threading.Event()
    overlapped: list[bool] = []
    read, evacuate = nova.free_resources, nova.evacuate

    def capacity_after_an_evacuate(hosts: Any = None) -> dict[str, Resources]:
        overlapped.append(evacuated.wait(timeout=5))  # in the engine's reader thread
        try:
            return read(hosts)
        finally:
            read_back.set()

    def evacuate_and_tell(server_id: str, host: str | None = None) -> None:
        evacuate(server_id, host)
        evacuated.set()

    nova.free_resources = capacity_after_an_evacuate  # type: ignore[method-assign]
    nova.evacuate = evacuate_and_tell  # type: ignore[method-assign]
    clock = Clock()

    def sleep(seconds: float) -> None:
        # Let the read finish before the next round: its answer is the future's once the
        # reader thread (named "inventory...") has ended.
        if read_back.wait(timeout=5):
            deadline = time.monotonic() + 5
            while any(t.name.startswith("inventory") for t in threading.enumerate()) \
                    and time.monotonic() < deadline:
                time.sleep(0.01)
        clock.t += seconds
        nova.step()

    run = Engine(nova, Ledger(nova, clock=clock.now),  # type: ignore[arg-type]
                 Settings(poll_interval=POLL, capacity_check="alongside", max_concurrency=2),
                 by="ctl-1/1", clock=clock, sleep=sleep, now=clock.now)
    report = run.run(HOST)

    assert overlapped == [True], "the capacity read returned before any evacuate was sent"
    assert report.ok and report.count(DONE) == 6
    first, rest = nova.named[:2], nova.named[2:]
    assert [host for _, host in first] == [None, None]  # sent before the capacity was known
    assert len(rest) == 4 and all(host in ("compute2", "compute3", "compute4")
                                  for _, host in rest)
    assert report.plan.capacity_known and report.plan.shortfall == ()
    planned = {m.server.id: m.target for m in report.plan.moves}
    assert [planned[sid] for sid, _ in first] == [None, None]
    assert [planned[sid] for sid, _ in rest] == [host for _, host in rest]


def test_alongside_a_failed_capacity_read_leaves_the_rest_to_the_scheduler(nova, timeline):
    for i in range(3):
        nova.add_server(f"vm{i}")

    def unreachable(hosts: Any = None) -> dict[str, Resources]:
        raise NovaError("unreachable", "list resource providers: cannot reach Placement")

    nova.free_resources = unreachable  # type: ignore[method-assign]

    report = engine(nova, Clock(), capacity_check="alongside", max_concurrency=1).run(HOST)

    assert report.ok and [host for _, host in nova.named] == [None, None, None]
    assert not report.plan.capacity_known and report.plan.shortfall == ()


def test_a_server_sent_with_no_target_counts_towards_the_host_nova_names(nova):
    """per_host_concurrency: an untargeted server in flight counts on its host once known;
    a server to be sent with no target is bounded only by max_concurrency."""
    run = engine(nova, Clock(), per_host_concurrency=1, max_concurrency=3)

    def track(name: str, target: str | None) -> Track:
        move = Planned(nova.add_server(name), 0, target, reset_first=False)
        return Track(initial_progress(move, HOST, None))

    sent = track("sent", None)
    sent.progress = replace(sent.progress, state=SUBMITTED, dest=None)
    to_2, to_3, anywhere = track("to-2", "compute2"), track("to-3", "compute3"), track("any", None)
    tracks = [sent, to_2, to_3, anywhere]
    assert run._room(tracks, to_2, [])  # its host is not known yet: counted nowhere
    sent.progress = replace(sent.progress, dest="compute2")  # Nova named it
    assert not run._room(tracks, to_2, []) and run._room(tracks, to_3, [])
    assert run._room(tracks, anywhere, [])
    assert not run._room(tracks, anywhere, [to_3, to_2])  # max_concurrency


# ---------------------------------------------------------------------------- the Nova adapter


@dataclass
class Answer:
    body: Any
    status_code: int = 200

    @property
    def content(self) -> bytes:
        return json.dumps(self.body).encode() if self.body is not None else b""

    def json(self) -> Any:
        return self.body


@dataclass
class Wire:
    answers: list[Answer]
    sent: list[tuple[str, str, Any, str | None]] = field(default_factory=list)

    def request(self, path: str, method: str, json: Any = None,
                microversion: str | None = None) -> Answer:
        self.sent.append((method, path, json, microversion))
        return self.answers.pop(0)


def test_the_adapter_lists_evacuations_from_any_host_and_pauses_at_2_94():
    from nova_evacuate.nova import Nova

    wire = Wire([Answer({"migrations": [{"id": 7, "instance_uuid": "u1", "status": "done",
                                         "source_compute": HOST, "dest_compute": "compute2",
                                         "created_at": "2026-12-01T12:00:00.000000"}]}),
                 Answer(None, 202)])
    nova = Nova(type("Conn", (), {"compute": wire})())
    (found,) = nova.evacuation_migrations(None, T0)
    assert (found.source_host, found.dest_host, found.succeeded) == (HOST, "compute2", True)
    nova.pause("u1")
    assert wire.sent == [
        ("GET", "/os-migrations?migration_type=evacuation&changes-since=2026-12-01T12%3A00%3A00Z"
                "&limit=1000", None, "2.94"),
        ("POST", "/servers/u1/action", {"pause": None}, "2.94")]


def test_the_service_list_is_read_once_before_the_claim_and_once_by_the_claim(nova, timeline):
    """Each read of the whole list costs about 0.3 s on a 1,000-host cloud: the gates, the
    ledger's state and the targets share one; only the claim, a write, reads the host's
    record afresh (and reads it back: Nova has no compare-and-set)."""
    nova.add_server("vm")
    real_one = nova.compute_service

    def one(host: str, domain: str | None = None) -> ComputeService:
        nova.calls.append(("compute_service", host))
        return real_one(host, domain)

    nova.compute_service = one  # type: ignore[method-assign]
    engine(nova, Clock()).run(HOST)
    names = [name for name, _ in nova.calls]
    before = names[:names.index("evacuate")]
    assert before.count("compute_services") == 1
    assert before.count("compute_service") == 2  # the claim's read and read-back


def test_the_claim_and_the_reads_the_plan_needs_go_side_by_side(nova, timeline):
    """The claim's write and read-back beside the migrations and servers reads: each waits
    for the other to have begun (done one after the other, the first waits its 5 s in
    vain). Nothing is sent before the claim is read back."""
    nova.add_server("vm")
    meet = Meeting()
    met = meet.met
    real_one, real_servers = nova.compute_service, nova.servers

    def one(host: str, domain: str | None = None) -> ComputeService:
        meet("claim")
        nova.calls.append(("compute_service", host))
        return real_one(host, domain)

    def servers(**kw: Any) -> list[Server]:
        meet("reads")
        return real_servers(**kw)

    nova.compute_service = one  # type: ignore[method-assign]
    nova.servers = servers  # type: ignore[method-assign]
    report = engine(nova, Clock()).run(HOST)
    assert report.ok and met == {"claim": True, "reads": True}
    names = [name for name, _ in nova.calls]
    read_back = [i for i, n in enumerate(names) if n == "compute_service"][1]
    assert names.index("evacuate") > read_back
    assert [e["by"] for e in events(timeline, "claimed")] == ["ctl-1/1"]


def test_a_claim_lost_to_another_engine_sends_nothing_though_the_reads_were_made(
        nova, timeline):
    nova.add_server("vm")
    real_disable = nova.disable

    def another_engine_wins(service_id: str, reason: str | None) -> ComputeService:
        written = real_disable(service_id, reason)
        if "evacuation=claimed" not in (reason or ""):
            return written
        won = (reason or "").replace("by=ctl-1/1", "by=ctl-2/7")  # written just after ours
        real_disable(service_id, won)
        return written

    nova.disable = another_engine_wins  # type: ignore[method-assign]
    with pytest.raises(ClaimLost, match="ctl-2/7"):
        engine(nova, Clock()).run(HOST)
    assert ("servers", HOST) in nova.calls and nova.count("evacuate") == 0
    assert events(timeline, "claimed") == []
