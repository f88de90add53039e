"""``openstack-ha-watchdog``: which guests Nova's watchdog would reset, and setting it.

    openstack-ha-watchdog audit [--json] [--os-cloud NAME] [--config-file FILE]
    openstack-ha-watchdog enforce [--flavor NAME_OR_ID]... [--image NAME_OR_ID]...
                                  [--all-evacuable] [--override] [--apply] [--json]

``audit`` reads every server (all projects), flavor and image, and reports each server's
effective watchdog action as Nova computes it (the image's ``hw_watchdog_action`` over
the flavor's ``hw:watchdog_action``; no watchdog when neither), from the flavor embedded
in the server when it was built, not today's flavor. Only ``reset`` recovers a guest
whose OS hangs. It lists, grouped: the evacuable servers (those the evacuation engine
would evacuate, by the same selection) whose guest would not be recovered, and why; the
other servers without recovery; the flavors and the images that set an action other than
``reset``. It reads with list calls only, whatever the number of servers, and says how
long it took and how many API requests it made.

``enforce`` sets ``hw:watchdog_action=reset`` on flavors and ``hw_watchdog_action=reset``
on images: those named (``--flavor``, ``--image``, by name or id, repeatable) and, with
``--all-evacuable``, the flavors and images of every evacuable server. It prints the plan
and changes nothing unless given ``--apply``; an explicit other value (``disabled``
included) is left unless given ``--override``; a second run plans nothing. Servers keep
the flavor and image settings Nova copied when they were built: the plan lists the ones
the changes reach only through a resize or a rebuild.

The cloud: ``--os-cloud`` (or ``--cloud``), else ``[cloud] cloud`` when the configuration
file sets it, else ``OS_CLOUD``, else the ``OS_*`` variables when ``OS_AUTH_URL`` is set,
else ``openstack`` (:mod:`nova_evacuate.cloud_args`, as for ``nova-evacuate``); the
``[evacuation]`` options of the same file select the evacuable servers, as for the engine.

Exit codes: 0 audit: every evacuable server's guest would be reset; enforce: the plan
was made (and with ``--apply``, every change applied). 1 audit: some evacuable server
would not be recovered; either: the cloud could not be read, or Nova or Glance refused a
change (said in one line). 2 bad command line or configuration, or a flavor or image
named that does not exist (one line). Nothing printed carries a credential.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO

from oslo_config import cfg

from nova_evacuate import conf as confmod
from nova_evacuate import watchdog as wd
from nova_evacuate.cloud_args import AppendText, add_cloud_arguments, choose_cloud
from nova_evacuate.engine import Settings
from nova_evacuate.nova import Nova, NovaError, connect_to_cloud
from nova_evacuate.plan import Policy
from openstack_ha.logsetup import redacted, setup_logging
from openstack_ha.timeline import terminal_text

PROG = "openstack-ha-watchdog"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MAX_NAME = 255  # Nova's and Glance's longest flavor or image name (and ids are shorter)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own exit code is 2 as well
        # one line, not argparse's usage block: the refusal is the message
        print(f"{PROG}: error: {_one_line(message)} (see --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def name_or_id(text: str) -> str:
    """A flavor's or an image's name or id from the command line: 1 to 255 characters,
    none of them a control character, no space at either end (names may hold spaces)."""
    if not text or len(text) > MAX_NAME or terminal_text(text) != text or text.strip() != text:
        raise argparse.ArgumentTypeError(
            f"{text[:60]!r} is not a name or id (1 to {MAX_NAME} printable characters, no"
            f" space at either end)")
    return text


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="\n\n".join(__doc__.split("\n\n")[2:]),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_cloud_arguments(p)  # before the command, as the openstack client takes them...
    commands = p.add_subparsers(dest="command", required=True, metavar="{audit,enforce}")
    audit = commands.add_parser("audit", help="report which guests the watchdog would reset")
    enforce = commands.add_parser("enforce", help="set hw:watchdog_action=reset (plan by default)")
    for sub in (audit, enforce):
        add_cloud_arguments(sub, defaults=False)  # ...or after it
        sub.add_argument("--json", action="store_true", help="print one JSON document")
    enforce.add_argument("--flavor", action=AppendText, dest="flavors", type=name_or_id,
                         metavar="NAME_OR_ID", default=[], help="a flavor to set (repeatable)")
    enforce.add_argument("--image", action=AppendText, dest="images", type=name_or_id,
                         metavar="NAME_OR_ID", default=[], help="an image to set (repeatable)")
    enforce.add_argument("--all-evacuable", action="store_true",
                         help="the flavors and images of every evacuable server")
    enforce.add_argument("--override", action="store_true",
                         help="replace an explicit other value (disabled, poweroff, ...) too")
    enforce.add_argument("--apply", action="store_true",
                         help="make the changes (without it: print the plan only)")
    return p


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "enforce" and not (args.flavors or args.images or args.all_evacuable):
        p.error("enforce needs --flavor, --image or --all-evacuable")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if hasattr(sys.stdout, "reconfigure"):  # a terminal in a non-UTF-8 locale: no crash
        sys.stdout.reconfigure(errors="replace")
    setup_logging(PROG)
    # The report and the one-line errors say it all: a library's warning (keystoneauth's
    # on a failed discovery, before the error that says so) would add lines.
    logging.getLogger().setLevel(logging.ERROR)
    try:
        return run(args, sys.stdout, os.environ)
    except KeyboardInterrupt:
        return _fail(EXIT_FAILED, "interrupted" + (
            "; the changes printed as set are made" if getattr(args, "apply", False) else ""))
    except Exception as exc:  # no traceback, ever: one line, as for every other failure
        return _fail(EXIT_FAILED, f"unexpected error: {type(exc).__name__}: {exc}")


def run(args: argparse.Namespace, out: TextIO, environ: Mapping[str, str]) -> int:
    try:
        conf = confmod.load(args.config_files)
    except (cfg.Error, ValueError) as exc:
        return _fail(EXIT_USAGE, f"configuration: {exc}")
    policy = Settings.from_conf(conf).policy  # the engine's own reading of [evacuation]
    choice = choose_cloud(args, conf, environ)
    try:
        # Nothing is sent yet: a cloud that cannot be used is a configuration error, and
        # the message names where the cloud (and its clouds.yaml) came from.
        nova = connect_to_cloud(conf, choice, environ)
    except NovaError as exc:
        return _fail(EXIT_USAGE, f"configuration: {exc}")
    requests = nova.count_requests()
    started = time.monotonic()
    try:
        snapshot = read_snapshot(nova, policy)
    except NovaError as exc:
        return _fail(EXIT_FAILED, f"cannot read the cloud: {exc}")
    result = wd.audit(snapshot, policy)
    if args.command == "audit":
        cost = Cost(time.monotonic() - started, requests())
        if args.json:
            print(json.dumps(audit_dict(result, choice.name, cost), indent=2), file=out)
        else:
            print(render_audit(result, choice.name, cost), file=out)
        return EXIT_OK if result.ok else EXIT_FAILED
    return enforce(args, nova, snapshot, result, out, lambda: Cost(
        time.monotonic() - started, requests()))


@dataclass(frozen=True)
class Cost:
    """How long the command's reads (and writes) took, and how many HTTP requests they
    made, Keystone's and version discovery included."""

    seconds: float
    requests: int

    def words(self, result: wd.Audit) -> str:
        return (f"read {len(result.servers)} servers, {result.flavor_count} flavors and"
                f" {result.image_count} images in {self.seconds:.2f} s with {self.requests}"
                f" API requests")

    def as_dict(self) -> dict[str, Any]:
        return {"took_seconds": round(self.seconds, 3), "api_requests": self.requests}


def read_snapshot(nova: Nova, policy: Policy) -> wd.Snapshot:
    """The whole cloud with list calls, a fixed number of them whatever its size (one
    more per thousand servers, flavors or images): servers of every project with their
    embedded flavors, flavors, images, and what the engine's selection reads (aggregates,
    and with instance filtering the tagged images and flavors, read as the engine reads
    them)."""
    servers = nova.servers_with_launch_times()
    filtering = policy.instance_filtering
    return wd.Snapshot(
        servers=tuple(server for server, _ in servers),
        launched_at={server.id: at.timestamp() for server, at in servers if at is not None},
        flavors=tuple(nova.flavors()), images=tuple(nova.images()),
        tagged_images=nova.tagged_images() if filtering else frozenset(),
        any_tagged_flavor=nova.any_flavor_tagged() if filtering else False,
        aggregates=tuple(nova.aggregates()))


# ---------------------------------------------------------------------------- audit


def render_audit(result: wd.Audit, cloud: str, cost: Cost) -> str:
    """The audit for a terminal; names and reasons from Nova or Glance without their
    control characters."""
    text = _one_line
    lines = [text(f"Watchdog audit of cloud {cloud}: {len(result.servers)} servers,"
                  f" {result.evacuable_count} evacuable"),
             *(text(f"selection: {s}") for s in result.selection)]

    def section(title: str, rows: Sequence[str]) -> None:
        if rows:
            lines.extend(["", f"{title} ({len(rows)}):", *(f"  {r}" for r in rows)])

    def server_line(row: wd.ServerWatchdog, why: str) -> str:
        s = row.server
        where = f" on {s.host}" if s.host else ""
        return text(f"{s.name} ({s.id}){where}: {why}")

    section("Evacuable servers whose guest would not be recovered",
            [server_line(r, r.reason) for r in result.evacuable_uncovered])
    section("Other servers whose guest would not be recovered (not evacuable)",
            [server_line(r, f"{r.reason} [not evacuable: {r.not_evacuable}]")
             for r in result.other_uncovered])
    section(f"Flavors that set {wd.FLAVOR_KEY} to something other than {wd.RESET}",
            [text(f"{f.name} ({f.id}): {f.watchdog_action}") for f in result.flavors_not_reset])
    section(f"Images that set {wd.IMAGE_KEY} to something other than {wd.RESET}",
            [text(f"{i.name} ({i.id}): {i.watchdog_action!r}") for i in result.images_not_reset])
    section("Covered servers, with what the audit could not read",
            [server_line(r, r.reason) for r in result.servers if r.covered and r.reason])
    lines += ["", cost.words(result) + "."]
    evacuable, uncovered = result.evacuable_count, len(result.evacuable_uncovered)
    if result.ok:
        lines.append(f"OK: the watchdog would reset the guest of every evacuable server"
                     f" ({evacuable}).")
    else:
        lines.append(f"NOT COVERED: {uncovered} of {evacuable} evacuable servers would not be"
                     f" recovered (only {wd.RESET} recovers a guest); `{PROG} enforce"
                     f" --all-evacuable` shows what to change.")
    return "\n".join(lines)


def audit_dict(result: wd.Audit, cloud: str, cost: Cost) -> dict[str, Any]:
    return {
        "ok": result.ok, "cloud": cloud, "selection": list(result.selection),
        "counts": {"servers": len(result.servers), "evacuable": result.evacuable_count,
                   "evacuable_not_covered": len(result.evacuable_uncovered),
                   "other_not_covered": len(result.other_uncovered),
                   "flavors": result.flavor_count, "images": result.image_count},
        "evacuable_not_covered": [r.server.id for r in result.evacuable_uncovered],
        "other_not_covered": [r.server.id for r in result.other_uncovered],
        "servers": [server_dict(r) for r in result.servers],
        "flavors_not_reset": [{"id": f.id, "name": f.name, "value": f.watchdog_action}
                              for f in result.flavors_not_reset],
        "images_not_reset": [{"id": i.id, "name": i.name, "value": i.watchdog_action}
                             for i in result.images_not_reset],
        **cost.as_dict(),
    }


def server_dict(row: wd.ServerWatchdog) -> dict[str, Any]:
    s = row.server
    image = None if s.image_id is None else {
        "id": s.image_id, "in_glance": row.image is not None,
        "name": row.image.name if row.image else None,
        "value": row.image.watchdog_action if row.image else None,
        "changed_since_launch": row.image_changed_since_launch}
    return {"id": s.id, "name": s.name, "project_id": s.project_id, "host": s.host,
            "status": s.status, "evacuable": row.evacuable,
            "not_evacuable": row.not_evacuable or None, "action": row.effective.action,
            "source": row.effective.source, "covered": row.covered,
            "reason": row.reason or None, "flavor": {"name": s.flavor_name,
                                                     "value": row.flavor_value},
            "image": image, "boot_from_volume": row.boot_from_volume}


# ---------------------------------------------------------------------------- enforce


def enforce(args: argparse.Namespace, nova: Nova, snapshot: wd.Snapshot, result: wd.Audit,
            out: TextIO, cost: Callable[[], Cost]) -> int:
    try:
        targets = [*(wd.resolve("flavor", n, snapshot.flavors) for n in args.flavors),
                   *(wd.resolve("image", n, snapshot.images) for n in args.images)]
    except LookupError as exc:
        return _fail(EXIT_USAGE, str(exc))
    missing: list[str] = []
    if args.all_evacuable:
        more, missing = wd.evacuable_targets(result, snapshot)
        targets += more
    plan = wd.plan_enforce(targets, result, override=args.override, missing=missing)
    if not args.json:
        print(render_plan_head(plan, args.apply), file=out)
    done: list[wd.Change] = []
    code = EXIT_OK
    if args.apply:
        code = apply_changes(nova, plan.changes, None if args.json else out, sys.stderr, done)
    if args.json:
        print(json.dumps(enforce_dict(plan, args.apply, done, result, cost()), indent=2),
              file=out)
    else:
        print(render_plan_tail(plan, result, cost()), file=out)
    return code


def apply_changes(nova: Nova, changes: Sequence[wd.Change], out: TextIO | None, err: TextIO,
                  done: list[wd.Change] | None = None) -> int:
    """Make each change in order, printing each on ``out`` once made (and adding it to
    ``done``). At the first one Nova or Glance refuses, or that cannot be sent: one line on
    ``err``, and exit 1 with the rest not tried. This is what ``--apply`` runs; the command
    only ever writes ``reset``, so the lab test gives this a value Nova refuses."""
    for change in changes:
        target = change.target
        try:
            if target.kind == "flavor":
                nova.set_flavor_extra_spec(target.id, target.key, change.new)
            else:
                nova.set_image_property(target.id, target.key, change.new,
                                        replace=target.value is not None)
        except NovaError as exc:
            print(f"{PROG}: " + _one_line(redacted(
                f"{target.kind} {target.name} ({target.id}) not changed: {exc}")), file=err)
            return EXIT_FAILED
        if done is not None:
            done.append(change)
        if out is not None:
            print("  " + _one_line(f"set {_change_words(change)}"), file=out)
    return EXIT_OK


def _value(value: str | None) -> str:
    return "unset" if value is None else repr(value)


def _change_words(change: wd.Change) -> str:
    t = change.target
    return f"{t.kind} {t.name} ({t.id}): {t.key} {_value(t.value)} -> {change.new}"


def render_plan_head(plan: wd.EnforcePlan, apply: bool) -> str:
    text = _one_line
    lines = ["Watchdog enforce: " + (
        f"applying {len(plan.changes)} changes" if apply
        else "plan (nothing is changed without --apply)")]
    lines += [f"  {text(m)}: left out" for m in plan.missing]
    lines += [f"  already {text(f'{t.kind} {t.name} ({t.id}): {t.key}={t.value}')}"
              for t in plan.already]
    lines += [f"  keep {text(f'{t.kind} {t.name} ({t.id}): {t.key}={t.value!r}')} is explicit"
              " (--override replaces it)" for t in plan.kept]
    if not apply:
        lines += [f"  would set {text(_change_words(c))}" for c in plan.changes]
    if not plan.changes:
        lines.append("  nothing to change")
    return "\n".join(lines)


def render_plan_tail(plan: wd.EnforcePlan, result: wd.Audit, cost: Cost) -> str:
    lines = []
    if plan.stale:
        lines += ["", f"Servers keep the flavor and image settings Nova copied when they were"
                      f" built: a flavor's change reaches a server only through a resize to a"
                      f" flavor that has it (Nova refuses a resize to the same flavor), an"
                      f" image's only through a rebuild (an evacuation keeps the old copy)."
                      f" These {len(plan.stale)} servers stay without recovery until then:"]
        lines += ["  " + _one_line(
            f"{s.server.name} ({s.server.id}){f' on {s.server.host}' if s.server.host else ''}:"
            f" {s.now if s.now is not None else 'unknown (image changed since launch)'}"
            f" now, {s.after.action} after a {s.needs}"
            f" ({s.by})") for s in plan.stale]
    lines += ["", cost.words(result) + "."]
    return "\n".join(lines)


def _target_dict(target: wd.Target) -> dict[str, Any]:
    return {"kind": target.kind, "id": target.id, "name": target.name, "key": target.key,
            "value": target.value}


def enforce_dict(plan: wd.EnforcePlan, applied: bool, done: Sequence[wd.Change],
                 result: wd.Audit, cost: Cost) -> dict[str, Any]:
    made = {(c.target.kind, c.target.id) for c in done}
    return {
        "applied": applied,
        "changes": [{**_target_dict(c.target), "new": c.new,
                     "done": (c.target.kind, c.target.id) in made} for c in plan.changes],
        "kept": [_target_dict(t) for t in plan.kept],
        "already": [_target_dict(t) for t in plan.already],
        "missing": list(plan.missing),
        "stale_servers": [{"id": s.server.id, "name": s.server.name, "host": s.server.host,
                           "now": s.now, "after": s.after.action, "needs": s.needs, "by": s.by,
                           "flavor": s.server.flavor_name, "image_id": s.server.image_id}
                          for s in plan.stale],
        "servers": len(result.servers),
        **cost.as_dict(),
    }


# ---------------------------------------------------------------------------- output


def _fail(code: int, message: str) -> int:
    print(f"{PROG}: {_one_line(redacted(message))}", file=sys.stderr)
    return code


def _one_line(text: object) -> str:
    """``text`` for a terminal, on one line: control characters out, whitespace runs one."""
    return " ".join(terminal_text(" ".join(str(text).splitlines())).split())


if __name__ == "__main__":
    sys.exit(main())
