"""``nova-evacuate HOST``: the evacuation engine by hand.

    nova-evacuate HOST [--dry-run] [--wait] [--json] [--force] [--config-file FILE]
                       [--os-cloud NAME]

Runs the same engine as ``ocf:openstack-ha:NovaEvacuate``, in the foreground, to the end:
the safety gates, the ledger (request if nobody did, claim, done or failed), the plan, the
evacuations and their tracking. On a terminal the progress of every instance is redrawn in
place; otherwise each change is one line.

``--dry-run`` prints the plan (what moves, in which order, where to, what is left and why,
the capacity verdict, what the gates say) and changes nothing. It reads the capacity unless
``[evacuation] capacity_check = off``, and then says it was not checked (with ``alongside``
it reads it first, as ``before`` does: a dry run sends nothing for the read to overlap).
``--wait``: when another engine (the cluster's NovaEvacuate) holds the host's evacuation,
follow it until it ends instead of exiting 3. ``--force`` overrides the mass-failure brake,
never the check that Nova sees the host down. ``--json`` prints the plan or the report as
one JSON document.

The cloud: ``--os-cloud NAME`` (or ``--cloud NAME``), else ``[cloud] cloud`` when the
configuration file sets it, else ``OS_CLOUD``, else the ``OS_*`` variables when
``OS_AUTH_URL`` is set (openstacksdk's ``envvars`` cloud), else ``openstack``; the
clouds.yaml: ``[cloud] clouds_yaml`` when the file sets it, else ``OS_CLIENT_CONFIG_FILE``,
else openstacksdk's search path (:mod:`nova_evacuate.cloud_args` says why).

Exit codes: 0 every planned instance finished (dry run: the gates pass, and the capacity
has no shortfall or was not checked); 1 some instance failed or timed out (dry run: a
capacity shortfall), or the run could not finish; 2 bad command line or configuration (a
clouds.yaml entry that cannot be used is configuration too), each said in one line; 3 a
safety gate refused, or another engine holds the evacuation.

Text from the configuration or from Nova (names, reasons, errors) is printed without its
control characters, so a server name cannot move the cursor or forge a line; ``--json``
prints it exactly, JSON-escaped.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Mapping
from typing import Any, NoReturn, TextIO

from oslo_config import cfg

from nova_evacuate import conf as confmod
from nova_evacuate import engine as engine_mod
from nova_evacuate.cloud_args import add_cloud_arguments, choose_cloud
from nova_evacuate.engine import DONE, FAILED, TIMED_OUT, Refused, WatchdogRead
from nova_evacuate.ledger import FINISHED, Ledger, LedgerError, State, pacemaker_mirror
from nova_evacuate.nova import NovaError, connect_to_cloud
from openstack_ha.logsetup import redacted, setup_logging
from openstack_ha.timeline import terminal_text

LOG = logging.getLogger("nova_evacuate.cli")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_REFUSED = 0, 1, 2, 3
MAX_NAME = 255  # a host name: a DNS name is at most 253 characters


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own exit code is 2 as well
        # one line, not argparse's usage block: the refusal is the message
        print(f"nova-evacuate: error: {terminal_text(message)} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _name(text: str) -> str:
    """A host name from the command line: one bounded printable token."""
    if not text or len(text) > MAX_NAME or terminal_text(text) != text or text.split() != [text]:
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r} is not a name (1 to {MAX_NAME} printable"
            f" characters, no spaces)")
    return text


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="nova-evacuate", description=__doc__.split("\n\n")[1],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("host", type=_name,
                   help="the failed compute host, as Nova or the cluster names it")
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    p.add_argument("--wait", action="store_true",
                   help="if another engine holds the evacuation, follow it to its end")
    p.add_argument("--json", action="store_true", help="print the plan or report as JSON")
    p.add_argument("--force", action="store_true", help="override the mass-failure brake")
    add_cloud_arguments(p)  # --os-cloud (--cloud) and --config-file
    p.add_argument("--debug", action="store_true", help="log debug messages")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # a terminal in a non-UTF-8 locale: no crash
        sys.stdout.reconfigure(errors="replace")
    interactive = sys.stdout.isatty() and not args.json and not args.dry_run
    setup_logging("nova-evacuate", debug=args.debug)
    if interactive and not args.debug:
        logging.getLogger().setLevel(logging.WARNING)  # the live table says it all
    try:
        return _main(args, interactive)
    except KeyboardInterrupt:
        print("nova-evacuate: interrupted; evacuations already sent go on in Nova, and the"
              " claim expires so another run resumes", file=sys.stderr)
        return EXIT_FAILED


def _main(args: argparse.Namespace, interactive: bool) -> int:

    try:
        conf = confmod.load(args.config_files)
    except (cfg.Error, ValueError) as exc:
        return _fail(EXIT_USAGE, f"configuration: {exc}")
    settings = engine_mod.Settings.from_conf(conf)
    display = Display(sys.stdout, interactive) if not args.json else None
    choice = choose_cloud(args, conf, os.environ)
    LOG.debug("cloud %r from %s, clouds.yaml from %s", choice.name, choice.source,
              choice.clouds_yaml_source)
    try:
        # Nothing is sent yet: a cloud that cannot be used is a configuration error.
        nova = connect_to_cloud(conf, choice)
    except NovaError as exc:
        return _fail(EXIT_USAGE, f"configuration: {exc}")
    try:
        ledger = Ledger(nova, pacemaker_mirror(), domain=settings.domain)
        engine = engine_mod.Engine(nova, ledger, settings,
                                   progress=display.update if display else lambda t: None)
        if args.dry_run:
            return _dry_run(engine, args)
        try:
            report = engine.run(args.host, force=args.force)
        except engine_mod.ClaimLost as exc:
            if not args.wait:
                return _fail(EXIT_REFUSED, f"{exc} (--wait follows that run)")
            return _follow(ledger, args.host, settings.poll_interval)
    except engine_mod.Refused as exc:
        return _fail(EXIT_REFUSED, str(exc))
    except (NovaError, LedgerError) as exc:
        return _fail(EXIT_FAILED, str(exc))
    if display:
        display.finish(report)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    return EXIT_OK if report.ok else EXIT_FAILED


def _fail(code: int, message: str) -> int:
    print(f"nova-evacuate: {_one_line(redacted(message))}", file=sys.stderr)
    return code


def _one_line(text: object) -> str:
    """``text`` for a terminal, on one line: control characters out, whitespace runs one."""
    return " ".join(terminal_text(" ".join(str(text).splitlines())).split())


def _dry_run(engine: Any, args: argparse.Namespace) -> int:
    services = engine.nova.compute_services()  # read once: the gates, the host, the targets
    try:
        engine.check_gates(args.host, force=args.force, services=services)
        gates = "pass"
    except Refused as exc:
        gates = f"REFUSED: {exc}"
    host = engine.service(args.host, services).host
    plan, _ = engine.plan(host, services=services)
    watchdog = WatchdogRead(engine.nova, plan)
    # a dry run waits for it as for a read ([cloud] api_timeout's default; once: see .of)
    actions = {m.server.id: watchdog.of(m.server.id, wait=30.0) for m in plan.moves}
    if args.json:
        print(json.dumps(plan_dict(plan, gates, actions), indent=2))
    else:
        print(render_plan(plan, gates, actions))
    if gates != "pass":
        return EXIT_REFUSED
    return EXIT_OK if plan.capacity_ok else EXIT_FAILED


def _capacity_checked(plan: Any) -> bool:
    """Whether the plan was made with the capacity (:attr:`Plan.capacity_known
    <nova_evacuate.plan.Plan.capacity_known>`)."""
    return bool(plan.capacity_known)


def plan_dict(plan: Any, gates: str, watchdog: Mapping[str, str] | None = None
              ) -> dict[str, Any]:
    """The plan as ``--dry-run --json`` prints it; ``watchdog``: each server's effective
    watchdog action (:class:`~nova_evacuate.engine.WatchdogRead`), "unknown" where absent."""
    checked = _capacity_checked(plan)
    watchdog = watchdog or {}
    return {
        "host": plan.host, "gates": gates, "selection": plan.tagging,
        "capacity_checked": checked,
        # not checked: neither OK nor short, unknown
        "capacity_ok": plan.capacity_ok if checked else None,
        "shortfall": list(plan.shortfall),
        "moves": [{"order": i, "phase": m.phase, "id": m.server.id, "name": m.server.name,
                   "status": m.server.status, "flavor": m.server.flavor_name,
                   "vcpus": m.server.vcpus, "ram_mb": m.server.ram_mb, "target": m.target,
                   "reset_first": m.reset_first,
                   "watchdog": watchdog.get(m.server.id, "unknown")}
                  for i, m in enumerate(plan.moves, 1)],
        "skipped": [{"id": s.server.id, "name": s.server.name, "reason": s.reason}
                    for s in plan.skipped],
    }


def render_plan(plan: Any, gates: str, watchdog: Mapping[str, str] | None = None) -> str:
    """The plan as text for a terminal: names, statuses and reasons from Nova or the
    configuration without their control characters."""
    text = _one_line
    watchdog = watchdog or {}
    checked = _capacity_checked(plan)
    lines = [f"Evacuation plan for {text(plan.host)} (dry run: nothing changed)",
             f"gates: {text(gates)}", f"selection: {text(plan.tagging)}", ""]
    if plan.moves:
        lines.append(f"{'#':>3}  {'phase':>5}  {'name':<24} {'status':<8} {'flavor':<12}"
                     f" {'vcpu':>4} {'ram MB':>7} {'watchdog':<8}  target")
        for i, m in enumerate(plan.moves, 1):
            s = m.server
            target = text(m.target) if m.target else (
                "(scheduler: no room found)" if checked else "(scheduler)")
            lines.append(f"{i:>3}  {m.phase:>5}  {text(s.name)[:24]:<24} {text(s.status):<8}"
                         f" {text(s.flavor_name)[:12]:<12} {s.vcpus:>4} {s.ram_mb:>7}"
                         f" {text(watchdog.get(s.id, 'unknown'))[:8]:<8}  {target}"
                         + ("  [state reset first]" if m.reset_first else ""))
    else:
        lines.append("nothing to evacuate")
    for s in plan.skipped:
        lines.append(f"  left: {text(s.server.name)} ({text(s.server.id)}): {text(s.reason)}")
    lines.append("")
    if not checked:
        lines.append("capacity: not checked ([evacuation] capacity_check=off)")
    elif plan.capacity_ok:
        lines.append(f"capacity: OK, the surviving hosts can take all {len(plan.moves)}")
    else:
        lines.append(f"capacity: SHORTFALL: no surviving host has room for"
                     f" {len(plan.shortfall)} of {len(plan.moves)} instances")
    return "\n".join(lines)


def _follow(ledger: Any, host: str, interval: float) -> int:
    print(f"nova-evacuate: {_one_line(host)} is being evacuated by another engine;"
          " following it", file=sys.stderr)
    while True:
        entry = ledger.read(host)
        if entry is None or entry.state in FINISHED:
            break
        time.sleep(max(interval, 1.0))
    if entry is None:
        print(f"{_one_line(host)}: no evacuation recorded any more (the host was returned)")
        return EXIT_OK
    print(_one_line(f"{host}: evacuation {entry.state} by {entry.by}: {entry.evacuated} done,"
                    f" {entry.failed} failed" + (f" ({entry.note})" if entry.note else "")))
    return EXIT_OK if entry.state is State.DONE else EXIT_FAILED


class Display:
    """Per-instance progress: redrawn in place on a terminal, one line per change otherwise.
    Names, hosts and reasons (Nova's) are shown without their control characters: the only
    escape sequences written are the display's own."""

    def __init__(self, out: TextIO, interactive: bool) -> None:
        self.out = out
        self.interactive = interactive
        self.rows: dict[str, Any] = {}
        self.drawn = 0
        self.t0 = time.monotonic()

    def update(self, track: Any) -> None:
        self.rows[track.server.id] = track
        if self.interactive:
            self._redraw()
        else:
            where = f" on {track.dest}" if track.dest else ""
            reason = f": {track.reason}" if track.reason and track.state != DONE else ""
            self.out.write(f"{time.monotonic() - self.t0:7.1f}s "
                           + _one_line(f"{track.server.name} ({track.server.id})"
                                       f" {track.state}{where}{reason}") + "\n")
            self.out.flush()

    def _redraw(self) -> None:
        width = shutil.get_terminal_size((100, 24)).columns
        lines = []
        for t in self.rows.values():
            line = (f"  {_one_line(t.server.name)[:28]:<28} {_one_line(t.state):<11}"
                    f" {_one_line(t.dest or ''):<16} {_one_line(t.reason)}")
            lines.append(line[:width - 1])
        done = sum(t.state == DONE for t in self.rows.values())
        lines.append(f"  {done}/{len(self.rows)} done, {time.monotonic() - self.t0:.0f}s")
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F")
        self.out.write("".join(f"\x1b[2K{line}\n" for line in lines))
        self.out.flush()
        self.drawn = len(lines)

    def finish(self, report: Any) -> None:
        self.out.write(_one_line(
            f"{report.host}: {report.count(DONE)} done, {report.count(FAILED)}"
            f" failed, {report.count(TIMED_OUT)} timed out,"
            f" {len(report.plan.skipped)} left by selection;"
            f" ledger {report.ledger.state if report.ledger else 'not updated'}") + "\n")
        for t in report.tracks:
            if t.state != DONE:
                self.out.write("  " + _one_line(f"{t.server.name} ({t.server.id}): {t.state}:"
                                                f" {t.reason}") + "\n")
        for s in report.plan.skipped:
            self.out.write("  " + _one_line(f"left: {s.server.name} ({s.server.id}):"
                                            f" {s.reason}") + "\n")
        self.out.flush()


if __name__ == "__main__":
    sys.exit(main())
