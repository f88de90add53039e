"""Instance recovery: the decision (nova_evacuate.instance_recovery), table-driven and
property-checked, its options, and the worker's scan over an in-memory Nova."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from oslo_config import cfg

from nova_evacuate import conf as confmod
from nova_evacuate import instance_recovery as ir
from nova_evacuate.engine import Settings as EngineSettings
from nova_evacuate.instance_recovery import (
    Decision,
    InstanceAction,
    StoppedServer,
    Verdict,
    decide,
    needs_images,
    opted_in,
    restarts_in_window,
    triage,
    valid_marker_key,
    watched_hosts,
)
from nova_evacuate.ledger import LedgerEntry, State, format_marker
from nova_evacuate.nova import ComputeService, NovaError
from nova_evacuate.plan import Server
from nova_evacuate.worker import Worker
from openstack_ha import timeline

KEY = "ha:recover"
NOW = 100_000.0
HOUR = ir.WINDOW_SECONDS


def server(sid: str = "s1", *, host: str | None = "compute1", task: str | None = None,
           metadata: dict[str, str] | None = None, flavor: dict[str, str] | None = None,
           image: str | None = "img-plain") -> Server:
    return Server(id=sid, name=f"vm-{sid}", status="SHUTOFF", host=host, task_state=task,
                  image_id=image, metadata=metadata if metadata is not None else {KEY: "true"},
                  flavor_extra_specs=flavor or {}, vm_state="stopped")


def nova_stop(request: str = "req-sync") -> InstanceAction:
    """What ComputeManager._sync_instance_power_state leaves: Nova's admin context."""
    return InstanceAction("stop", request, None, None)


def by_user(action: str, request: str = "req-user", message: str | None = None) -> InstanceAction:
    return InstanceAction(action, request, "user-1", "project-1", message=message)


# ---------------------------------------------------------------------------- the rule

# (case, newest-first actions, restart times, verdict, words in the reason)
CASES = [
    ("crash after a start", [nova_stop(), by_user("start"), by_user("create")], [],
     Verdict.START, "stopped by itself"),
    ("crash after the boot", [nova_stop(), by_user("create")], [], Verdict.START,
     "restart 1 of at most 3"),
    ("crash after a reboot", [nova_stop(), by_user("reboot"), by_user("create")], [],
     Verdict.START, "'reboot'"),
    ("crash after our own restart", [nova_stop("req-2"), by_user("start"), nova_stop(),
                                     by_user("create")], [NOW - 60], Verdict.START,
     "restart 2 of at most 3"),
    ("crash after a resize, an evacuation and a lock: they keep the power state",
     [nova_stop(), by_user("lock"), by_user("evacuate"), by_user("confirmResize"),
      by_user("resize"), by_user("create")], [], Verdict.START, "'create'"),
    ("a user's stop", [by_user("stop"), by_user("create")], [], Verdict.LEAVE,
     "stopped through the API"),
    ("a stop by a user of no project still is a user's", [InstanceAction("stop", "r", "u", None)],
     [], Verdict.LEAVE, "stopped through the API"),
    ("an admin's (or the engine's) stop, after a crash restart",
     [by_user("stop"), by_user("start"), nova_stop(), by_user("create")], [NOW - 60],
     Verdict.LEAVE, "stopped through the API"),
    ("someone acted after Nova's stop", [by_user("lock"), nova_stop(), by_user("create")], [],
     Verdict.LEAVE, "newest instance action is 'lock'"),
    ("evacuated while stopped (lands stopped)", [by_user("evacuate"), by_user("stop")], [],
     Verdict.LEAVE, "'evacuate'"),
    ("Nova stopped a guest started outside Nova, the server stopped by a user",
     [nova_stop(), by_user("stop"), by_user("create")], [], Verdict.LEAVE,
     "not meant to run, after 'stop' by user user-1"),
    ("the same after a resize while stopped",
     [nova_stop(), by_user("confirmResize"), by_user("resize"), by_user("stop")], [],
     Verdict.LEAVE, "not meant to run, after 'stop'"),
    ("Nova stopped a paused guest that died", [nova_stop(), by_user("pause"), by_user("create")],
     [], Verdict.LEAVE, "not meant to run, after 'pause'"),
    ("Nova stopped it twice: the second time it was already stopped",
     [nova_stop("req-2"), nova_stop("req-1"), by_user("create")], [], Verdict.LEAVE,
     "after 'stop' by Nova's power-state sync (request req-1)"),
    ("no power action among those read", [nova_stop(), by_user("lock"), by_user("unlock")], [],
     Verdict.LEAVE, "none of its 3 newest actions"),
    ("no action at all", [], [], Verdict.LEAVE, "no instance action"),
    ("the limit reached", [nova_stop(), by_user("start"), by_user("create")],
     [NOW - 3000, NOW - 2000, NOW - 10], Verdict.GIVE_UP,
     "after 3 restart(s) in the last hour"),
    ("restarts older than an hour do not count", [nova_stop(), by_user("start")],
     [NOW - HOUR - 1, NOW - HOUR - 100, NOW - 10], Verdict.START, "restart 2 of at most 3"),
    ("our start did not bring it up", [by_user("start", message="Error"), nova_stop(),
                                       by_user("create")], [NOW - 40], Verdict.GIVE_UP,
     "did not come up: Nova's start (Error)"),
    ("a user's start that failed, none of ours", [by_user("start", message="Error"),
                                                  by_user("stop")], [], Verdict.LEAVE,
     "newest instance action is 'start'"),
]


@pytest.mark.parametrize(("actions", "restarts", "verdict", "words"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_the_rule(actions, restarts, verdict, words) -> None:
    decision = decide(server(), actions, restarts, NOW, 3)
    assert decision.verdict is verdict, decision.why
    assert words in decision.why
    assert (decision.server_id, decision.name, decision.host) == ("s1", "vm-s1", "compute1")


action_names = st.sampled_from(sorted(ir.RUNNING_AFTER | ir.NOT_RUNNING_AFTER
                                      | {"lock", "resize", "evacuate", "rebuild", "migrate"}))
actions_st = st.lists(st.builds(InstanceAction, action_names, st.just("r"),
                                st.sampled_from([None, "", "user-1"]),
                                st.sampled_from([None, "", "project-1"])), max_size=8)


@given(actions=actions_st, restarts=st.lists(st.floats(NOW - 2 * HOUR, NOW), max_size=5),
       limit=st.integers(1, 5))
def test_only_a_stop_by_nova_after_a_running_action_is_ever_undone(actions, restarts,
                                                                      limit) -> None:
    decision = decide(server(), actions, restarts, NOW, limit)
    if decision.verdict is Verdict.START:
        newest = actions[0]
        assert newest.action == "stop" and newest.by_nova
        assert not newest.user_id and not newest.project_id
        power = [a for a in actions[1:]
                 if a.action in ir.RUNNING_AFTER | ir.NOT_RUNNING_AFTER]
        assert power[0].action in ir.RUNNING_AFTER
        assert len(restarts_in_window(restarts, NOW)) < limit
    if actions and actions[0].action == "stop" and not actions[0].by_nova:
        assert decision.verdict is Verdict.LEAVE


@given(limit=st.integers(1, 6), gaps=st.lists(st.floats(1, 900), min_size=1, max_size=40))
def test_never_more_restarts_in_any_hour_than_the_limit(limit, gaps) -> None:
    """A guest crashing again and again: the restarts the rule allows, at the crash times."""
    restarts: list[float] = []
    now = 0.0
    actions = [nova_stop(), by_user("start")]
    for gap in gaps:
        now += gap
        if decide(server(), actions, restarts, now, limit).verdict is Verdict.START:
            restarts.append(now)
    for t in restarts:
        assert len([r for r in restarts if t - HOUR < r <= t]) <= limit


def test_restarts_in_window_is_the_last_hour() -> None:
    assert restarts_in_window([NOW - HOUR, NOW - HOUR + 1, NOW, NOW + 1], NOW) == \
        [NOW - HOUR + 1, NOW]


# ---------------------------------------------------------------------------- selection


@pytest.mark.parametrize(("where", "value", "expected"), [
    ("metadata", "true", True), ("metadata", "True", True), ("metadata", "yes", True),
    ("metadata", "1", True), ("metadata", "false", False), ("metadata", "", False),
    ("flavor", "true", True), ("flavor", "no", False), ("image", None, True),
    ("nowhere", None, False),
])
def test_opted_in_by_metadata_flavor_or_image(where, value, expected) -> None:
    s = server(metadata={KEY: value} if where == "metadata" else {"other": "true"},
               flavor={KEY: value} if where == "flavor" else {},
               image="img-tagged" if where == "image" else "img-plain")
    assert opted_in(s, KEY, {"img-tagged"}) is expected


@given(value=st.text(max_size=8))
def test_a_marker_value_counts_as_true_exactly_as_evacuable_does(value) -> None:
    expected = value.strip().lower() in ("true", "1", "yes")
    assert opted_in(server(metadata={KEY: value}), KEY, frozenset()) is expected
    assert opted_in(server(metadata={}, flavor={KEY: value}), KEY, frozenset()) is expected


@dataclass(frozen=True)
class Svc:
    host: str
    live: bool = True
    disabled_reason: str | None = None


def test_watched_hosts_are_live_and_not_in_the_ledger() -> None:
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    services = [
        Svc("up"), Svc("down", live=False),
        Svc("requested", disabled_reason=format_marker(LedgerEntry(State.REQUESTED, at,
                                                                   "fence_nova"))),
        Svc("done", disabled_reason=format_marker(LedgerEntry(State.DONE, at, "ctl1/1"))),
        Svc("unreadable", disabled_reason="openstack-ha:v0 what"),
        Svc("operator", disabled_reason="RMA 4711"),
    ]
    assert watched_hosts(services) == {"up", "operator"}


def stopped(s: Server, updated: str = "2026-11-30T12:00:00Z") -> StoppedServer:
    return StoppedServer(s, updated)


def test_triage_reads_actions_only_of_new_opted_in_servers_on_watched_hosts() -> None:
    batch = [
        stopped(server("new")),
        stopped(server("plain", metadata={})),
        stopped(server("by-image", metadata={}, image="img-tagged")),
        stopped(server("elsewhere", host="compute9")),
        stopped(server("nowhere", host=None)),
        stopped(server("busy", task="powering-on")),
        stopped(server("seen"), "t1"),
        stopped(server("seen-again"), "t2"),
    ]
    to_read, decisions = triage(batch, {"compute1"}, KEY, {"img-tagged"},
                                {"seen": "t1", "seen-again": "t1"})
    assert [s.server.id for s in to_read] == ["new", "by-image", "seen-again"]
    assert {(d.server_id, d.verdict) for d in decisions} == {
        ("plain", Verdict.NOT_OPTED_IN), ("elsewhere", Verdict.WAIT),
        ("nowhere", Verdict.WAIT), ("busy", Verdict.WAIT)}


def test_glance_is_read_only_for_a_candidate_its_metadata_and_flavor_do_not_opt_in() -> None:
    watched = {"compute1"}
    assert not needs_images([stopped(server())], watched, KEY, {})
    assert not needs_images([stopped(server(flavor={KEY: "true"}, metadata={}))], watched,
                            KEY, {})
    assert not needs_images([stopped(server(metadata={}, image=None))], watched, KEY, {})
    assert not needs_images([stopped(server(metadata={}, host="compute9"))], watched, KEY, {})
    assert not needs_images([stopped(server(metadata={}), "t1")], watched, KEY, {"s1": "t1"})
    assert needs_images([stopped(server(metadata={}))], watched, KEY, {})


# ---------------------------------------------------------------------------- options


def load(tmp_path, body: str) -> cfg.ConfigOpts:
    path = tmp_path / "c.conf"
    path.write_text(f"[instance_recovery]\n{body}", encoding="utf-8")
    return confmod.load([str(path)])


def test_the_options_default_to_off_and_read_into_settings(tmp_path) -> None:
    defaults = confmod.load([])
    assert defaults.instance_recovery.enabled is False
    assert ir.Settings.from_conf(defaults) == ir.Settings()
    on = load(tmp_path, "enabled = true\nmarker_key = ha:restart\nmax_restarts_per_hour = 5\n"
                        "interval = 10\n")
    assert on.instance_recovery.enabled is True
    assert ir.Settings.from_conf(on) == ir.Settings("ha:restart", 5, 10.0)


@pytest.mark.parametrize("value", ["", "two words", "a=b", "k" * 256, "ha/recover", "é"])
def test_a_marker_key_nova_could_not_store_is_refused_in_one_line(tmp_path, value) -> None:
    with pytest.raises(confmod.ConfigValueError) as refused:
        load(tmp_path, f"marker_key = {value}\n")
    assert str(refused.value).startswith("[instance_recovery] marker_key")
    assert "\n" not in str(refused.value)


@given(key=st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                   max_size=20))
@settings(max_examples=150, deadline=None)
def test_any_marker_key_loads_as_a_valid_key_or_is_refused_in_one_line(key) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".conf", encoding="utf-8") as f:
        f.write(f"[instance_recovery]\nmarker_key = {key}\n")
        f.flush()
        try:
            conf = confmod.load([f.name])
        except (cfg.Error, ValueError) as exc:
            assert "\n" not in str(exc)
            return
    assert valid_marker_key(conf.instance_recovery.marker_key)


# ---------------------------------------------------------------------------- the worker


@dataclass
class FakeNova:
    """What the worker's recovery scan uses of the Nova adapter, over in-memory servers."""

    servers: dict[str, StoppedServer] = field(default_factory=dict)
    actions: dict[str, list[InstanceAction]] = field(default_factory=dict)
    tagged: frozenset[str] = frozenset()
    services: list[ComputeService] = field(default_factory=lambda: [
        ComputeService("id-1", "compute1", "up", "enabled", False, None, None)])
    refuse_start: bool = False
    calls: list[str] = field(default_factory=list)

    def adopt_token(self, other: object) -> None:
        pass

    def compute_services(self) -> list[ComputeService]:
        return self.services

    def stopped_servers(self, since: datetime) -> list[StoppedServer]:
        self.calls.append("stopped_servers")
        return list(self.servers.values())

    def tagged_images(self, key: str) -> frozenset[str]:
        self.calls.append("tagged_images")
        return self.tagged

    def instance_actions(self, server_id: str, limit: int) -> list[InstanceAction]:
        self.calls.append(f"actions {server_id}")
        return self.actions.get(server_id, [])[:limit]

    def start(self, server_id: str) -> None:
        self.calls.append(f"start {server_id}")
        if self.refuse_start:
            raise NovaError("refused", f"start server {server_id}: Nova answered 409")
        self.servers.pop(server_id)  # ACTIVE: no longer listed
        self.actions[server_id].insert(0, by_user("start", "req-ours"))

    # a crash as Nova records it, and a user's stop
    def crash(self, s: Server, n: int) -> None:
        self.servers[s.id] = StoppedServer(s, f"t{n}")
        self.actions.setdefault(s.id, [by_user("create")]).insert(0, nova_stop(f"req-{n}"))

    def user_stop(self, s: Server) -> None:
        self.servers[s.id] = StoppedServer(s, "t-user")
        self.actions.setdefault(s.id, [by_user("create")]).insert(0, by_user("stop"))


def recovering(nova: FakeNova, limit: int = 2) -> Worker:
    return Worker(lambda: nova, EngineSettings(),  # type: ignore[arg-type, return-value]
                  recovery=ir.Settings(KEY, limit, 5.0))


def events() -> list[timeline.Event]:
    path = Path(timeline.path() or "")
    return timeline.read(str(path))[0] if path.exists() else []


def by_verdict(decisions: list[Decision]) -> dict[str, Verdict]:
    return {d.server_id: d.verdict for d in decisions}


def test_a_crashed_server_is_restarted_and_the_timeline_says_so() -> None:
    nova = FakeNova()
    nova.crash(server("s1"), 1)
    w = recovering(nova)
    assert by_verdict(w.recovery_scan()) == {"s1": Verdict.START}
    assert nova.calls == ["stopped_servers", "actions s1", "start s1"]
    (event,) = events()
    assert (event.event, event.host) == ("instance_restarted", "compute1")
    assert event.data["server"] == "s1" and event.data["restarts_in_hour"] == 1
    assert "stopped by itself" in event.data["why"]


def test_a_user_stop_and_a_server_not_opted_in_are_left_and_read_once() -> None:
    nova = FakeNova()
    nova.user_stop(server("mine"))
    nova.crash(server("plain", metadata={}, image=None), 1)
    w = recovering(nova)
    assert by_verdict(w.recovery_scan()) == {"mine": Verdict.LEAVE,
                                             "plain": Verdict.NOT_OPTED_IN}
    assert by_verdict(w.recovery_scan()) == {"plain": Verdict.NOT_OPTED_IN}
    # the user-stopped server's actions were read once; nothing was started or recorded
    assert nova.calls == ["stopped_servers", "actions mine", "stopped_servers"]
    assert events() == []


def test_an_image_marker_is_read_from_glance_only_when_needed() -> None:
    nova = FakeNova(tagged=frozenset({"img-tagged"}))
    nova.crash(server("by-image", metadata={}, image="img-tagged"), 1)
    w = recovering(nova)
    assert by_verdict(w.recovery_scan()) == {"by-image": Verdict.START}
    assert nova.calls == ["stopped_servers", "tagged_images", "actions by-image",
                          "start by-image"]


def test_after_the_limit_the_server_stays_shutoff_and_the_timeline_says_it_gave_up(
        monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("nova_evacuate.worker.time.monotonic", lambda: clock[0])
    nova = FakeNova()
    s = server("s1")
    w = recovering(nova, limit=2)
    for n in (1, 2):
        nova.crash(s, n)
        assert by_verdict(w.recovery_scan()) == {"s1": Verdict.START}
        clock[0] += 60
    nova.crash(s, 3)
    assert by_verdict(w.recovery_scan()) == {"s1": Verdict.GIVE_UP}
    assert by_verdict(w.recovery_scan()) == {}  # decided: not read again
    assert "s1" in nova.servers  # left SHUTOFF
    assert [e.event for e in events()] == ["instance_restarted", "instance_restarted",
                                           "instance_recovery_gave_up"]
    assert "max_restarts_per_hour = 2" in events()[-1].data["why"]
    # its owner starts it; an hour after the first restart the count has room again
    clock[0] += HOUR
    nova.servers.pop("s1")
    nova.actions["s1"].insert(0, by_user("start"))
    nova.crash(s, 4)
    assert by_verdict(w.recovery_scan()) == {"s1": Verdict.START}


def test_a_refused_start_counts_towards_the_limit_and_is_not_recorded_as_a_restart() -> None:
    nova = FakeNova(refuse_start=True)
    nova.crash(server("s1"), 1)
    w = recovering(nova, limit=2)
    w.recovery_scan()
    w.recovery_scan()
    assert by_verdict(w.recovery_scan()) == {"s1": Verdict.GIVE_UP}
    assert nova.calls.count("start s1") == 2
    assert [e.event for e in events()] == ["instance_recovery_gave_up"]


def test_servers_on_a_host_in_the_ledger_or_forced_down_are_not_read() -> None:
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    nova = FakeNova(services=[
        ComputeService("id-1", "compute1", "up", "disabled", False,
                       format_marker(LedgerEntry(State.DONE, at, "ctl1/1")), None),
        ComputeService("id-2", "compute2", "up", "enabled", True, None, None)])
    nova.crash(server("s1"), 1)
    nova.crash(server("s2", host="compute2"), 1)
    assert by_verdict(recovering(nova).recovery_scan()) == {"s1": Verdict.WAIT,
                                                           "s2": Verdict.WAIT}
    assert nova.calls == ["stopped_servers"]


class StepNova(FakeNova):
    """Also what the worker's evacuation scan reads: nothing to do there."""

    def servers_in_error(self, since: datetime) -> list[Server]:
        return []


def test_off_by_default_the_worker_never_looks_for_stopped_servers() -> None:
    nova = StepNova()
    nova.crash(server("s1"), 1)
    w = Worker(lambda: nova, EngineSettings())  # type: ignore[arg-type, return-value]
    w.step()
    w.step()
    assert w.recovery_thread is None and nova.calls == []
    assert "instance_recovery_error" not in w.status()


def test_on_the_scan_runs_in_its_own_thread_once_per_interval(monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("nova_evacuate.worker.time.monotonic", lambda: clock[0])
    nova = StepNova()
    nova.crash(server("s1"), 1)
    w = recovering(nova)
    w.step()
    thread = w.recovery_thread
    assert thread is not None and thread.name == "instance-recovery"
    thread.join(5)
    assert "start s1" in nova.calls
    w.step()  # within the interval: no second scan
    assert w.recovery_thread is thread
    clock[0] += 5
    w.step()
    assert w.recovery_thread is not thread
    w.recovery_thread.join(5)
    assert nova.calls.count("stopped_servers") == 2
    assert w.status()["instance_recovery_error"] == ""


def test_a_failed_scan_is_logged_once_and_kept_in_the_status(monkeypatch, caplog) -> None:
    nova = StepNova()

    def unreachable(since: datetime) -> list[StoppedServer]:
        raise NovaError("unreachable", "list stopped servers: cannot reach the cloud")

    monkeypatch.setattr(nova, "stopped_servers", unreachable)
    w = recovering(nova)
    w._recovery_run()
    w._recovery_run()
    assert "cannot reach the cloud" in w.status()["instance_recovery_error"]
    assert sum("instance recovery scan failed" in r.message for r in caplog.records) == 1


def test_the_scan_stops_between_servers_when_the_worker_stops() -> None:
    nova = FakeNova()
    nova.crash(server("s1"), 1)
    nova.crash(server("s2"), 1)
    w = recovering(nova)
    w.stop_event.set()
    w.recovery_scan()
    assert nova.calls == ["stopped_servers"]

