"""ocf:openstack-ha:NovaEvacuate: evacuates the hosts that fence_nova fenced.

One copy, on a controller. The work outlives any action, so the agent runs it in a
worker process (:mod:`nova_evacuate.worker`, which says why): ``start`` spawns the worker
and returns once it is up (a second or two, no Nova call on the way); ``monitor`` checks
that the worker lives and keeps writing its status file (cheap: no Nova call, never
blocking); ``stop`` asks it to end (its evacuations hand their claims back so the copy
Pacemaker starts elsewhere resumes at once), and kills it after a grace period.

The worker watches the ``evacuate`` node attributes every second and Nova's ledger every
``nova_interval`` seconds, claims requested hosts and runs the evacuation engine on each,
and returns hosts whose evacuation finished once they are back.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from agents import ocf
from agents.ocf import Action, Agent, Context, OCFError, OCFExit, Parameter
from openstack_ha.logsetup import SYSLOG_FACILITY_ENV, open_for_append

LOG = logging.getLogger(__name__)

WORKER_MODULE = "nova_evacuate.worker"
# The status file is rewritten every second; older than this means the worker hangs.
STALE_AFTER_SECONDS = 60.0


def _nova_interval(text: str) -> int:
    # an integer, as meta-data says: float() took 'nan', '1e3' and '٣'
    return ocf.parse_integer(text, minimum=1, maximum=3600)


def _config_file(text: str) -> str:
    # empty is a value here: no file at all (see the parameter's longdesc)
    return text if text == "" else ocf.parse_path(text, absolute=False)


PARAMETERS = (
    Parameter(
        "config_file",
        shortdesc="The engine's configuration file",
        longdesc=(
            "oslo.config file with the [cloud], [evacuation] and [safety] options "
            "(see /usr/share/doc/openstack-ha or etc/openstack-ha/openstack-ha.conf.sample). "
            "Empty: none, every option at its default."
        ),
        default="/etc/openstack-ha/openstack-ha.conf",
        parse=_config_file,
        empty_is_value=True,
    ),
    Parameter(
        "cloud",
        shortdesc="clouds.yaml entry to use",
        longdesc="Overrides [cloud] cloud of the configuration file. Empty: that option.",
        default="",
    ),
    Parameter(
        "nova_interval",
        shortdesc="Seconds between two reads of Nova's ledger",
        longdesc=(
            "The worker reads the node attributes every second and Nova's service list "
            "(the ledger's truth, which outlives a full cluster restart) this often."
        ),
        content_type="integer",
        default="10",
        parse=_nova_interval,
    ),
    Parameter(
        "log_file",
        shortdesc="Where the worker logs",
        longdesc="The worker's log; empty: syslog only (daemon facility).",
        default="/var/log/openstack-ha/nova-evacuate.log",
        parse=ocf.parse_optional_path,
        empty_is_value=True,
    ),
)


def _paths(ctx: Context) -> tuple[str, str]:
    rsc_tmp = ctx.environ.get("HA_RSCTMP") or "/run/resource-agents"
    return (ocf.instance_file(rsc_tmp, "NovaEvacuate", ctx.resource, ".pid"),
            ocf.instance_file(rsc_tmp, "NovaEvacuate", ctx.resource, ".status"))


def _worker_pid(pid_file: str) -> int | None:
    """The worker's pid when it runs (checked against its command line), else None."""
    try:
        with open(pid_file, encoding="utf-8") as f:
            pid = int(f.read().strip())
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().split(b"\0")
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    return pid if WORKER_MODULE.encode() in cmdline else None


def _status_age(status_file: str) -> float | None:
    try:
        return time.time() - os.stat(status_file).st_mtime
    except FileNotFoundError:
        return None


def _check_config(ctx: Context) -> None:
    """The engine's configuration is here, readable and valid, or the OCFError that says why.

    Only start and validate-all need it: monitor and stop look at the worker alone, so on a
    node without the file (every compute node) a probe answers "not running" and a stop
    succeeds. A file missing or unreadable on this node is OCF_ERR_INSTALLED (Pacemaker may
    start the resource on another node, which may have it); a file whose contents are wrong
    is OCF_ERR_CONFIGURED.
    """
    path = ctx.params["config_file"]
    if path:
        if not os.path.exists(path):
            raise OCFError(OCFExit.ERR_INSTALLED,
                           f"configuration file {path} does not exist on this node")
        if not os.path.isfile(path):
            raise OCFError(OCFExit.ERR_INSTALLED,
                           f"configuration file {path} is not a regular file")
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise OCFError(OCFExit.ERR_INSTALLED, f"configuration file {path} cannot be"
                           f" read: {exc.strerror or exc}") from None
    from oslo_config import cfg

    from nova_evacuate import conf

    try:
        conf.load([path] if path else [])
    except (cfg.Error, ValueError) as exc:
        raise OCFError(OCFExit.ERR_CONFIGURED, f"configuration file {path}: {exc}") from None
    except SystemExit:  # oslo's own parser exits on some syntax errors
        raise OCFError(OCFExit.ERR_CONFIGURED,
                       f"configuration file {path} cannot be parsed") from None


def _open_log(log_file: str) -> int:
    """The worker's stdout and stderr: ``log_file`` opened for appending as root may (no
    link followed, a regular file only, 0640), or /dev/null when it is empty (syslog only)."""
    if not log_file:
        return os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.makedirs(os.path.dirname(log_file), exist_ok=True)
        return open_for_append(log_file, 0o640)
    except OSError as exc:
        raise OCFError(OCFExit.ERR_PERM, f"log_file {log_file} refused: "
                       f"{exc.strerror or exc}") from None


def start(ctx: Context) -> OCFExit:
    pid_file, status_file = _paths(ctx)
    if _worker_pid(pid_file) is not None:
        return OCFExit.SUCCESS
    _check_config(ctx)
    log_file = ctx.params["log_file"]
    out = _open_log(log_file)
    try:
        worker = _spawn(ctx, out, pid_file, status_file)
    finally:
        os.close(out)
    # Up when it has written its status once (before any Nova call, so a slow cloud
    # does not slow the start).
    while _status_age(status_file) is None:
        if worker.poll() is not None:
            raise OCFError(OCFExit.ERR_GENERIC, f"worker exited with {worker.returncode} at"
                           f" start-up; see {log_file or 'syslog'}")
        if ctx.remaining() < 2:
            raise OCFError(OCFExit.ERR_GENERIC, "worker not up before start's timeout")
        time.sleep(0.1)
    LOG.info("evacuation worker started (pid %d)", worker.pid)
    return OCFExit.SUCCESS


def _spawn(ctx: Context, out: int, pid_file: str, status_file: str) -> subprocess.Popen[bytes]:
    os.makedirs(os.path.dirname(pid_file), exist_ok=True)
    for stale in (status_file,):
        if os.path.exists(stale):
            os.unlink(stale)
    argv = [sys.executable, "-I", "-m", WORKER_MODULE, "--status-file", status_file,
            "--nova-interval", str(ctx.params["nova_interval"])]
    # "--option=value": a value starting with '-' is never read as another option
    if ctx.params["config_file"]:
        argv.append(f"--config-file={ctx.params['config_file']}")
    else:  # empty: no file at all, not the default one (meta-data)
        argv.append("--no-config-file")
    if ctx.params["cloud"]:
        argv.append(f"--cloud={ctx.params['cloud']}")
    env = {k: v for k, v in ctx.environ.items() if not k.startswith("OCF_RESKEY_")}
    if not ctx.params["log_file"]:
        # "empty: syslog only (daemon facility)", as meta-data says: the worker's stdout
        # and stderr go nowhere, so it logs to syslog
        env[SYSLOG_FACILITY_ENV] = "daemon"
    worker = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                              start_new_session=True, env=env, close_fds=True)
    ocf.write_file(pid_file, f"{worker.pid}\n", 0o644)
    return worker


def stop(ctx: Context) -> OCFExit:
    pid_file, status_file = _paths(ctx)
    pid = _worker_pid(pid_file)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        # Its evacuations hand their claims back within a poll; then kill what is left.
        while _alive(pid) and ctx.remaining() > 3:
            time.sleep(0.2)
        if _alive(pid):
            LOG.warning("worker %d did not stop in time; killing it", pid)
            os.kill(pid, signal.SIGKILL)
    for path in (pid_file, status_file):
        if os.path.exists(path):
            os.unlink(path)
    return OCFExit.SUCCESS


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie of ours counts as gone
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def monitor(ctx: Context) -> OCFExit:
    pid_file, status_file = _paths(ctx)
    if _worker_pid(pid_file) is None:
        if os.path.exists(pid_file):
            raise OCFError(OCFExit.ERR_GENERIC, "the evacuation worker died")
        return OCFExit.NOT_RUNNING
    # Its age is what matters; what it says (runs, refusals) the worker logs itself, once.
    age = _status_age(status_file)
    if age is None or age > STALE_AFTER_SECONDS:
        raise OCFError(OCFExit.ERR_GENERIC, "the evacuation worker stopped reporting"
                       f" ({'never' if age is None else f'{age:.0f}s ago'})")
    return OCFExit.SUCCESS


def validate_all(ctx: Context) -> OCFExit:
    _check_config(ctx)
    return OCFExit.SUCCESS


AGENT = Agent(
    name="NovaEvacuate",
    version="1.0",
    shortdesc="Evacuates the instances of fenced OpenStack compute hosts",
    longdesc=(
        "Runs one evacuation worker (one copy of this resource, on a controller). It picks up "
        "the evacuation requests fence_nova records (Nova's service marker, mirrored to the "
        "node attribute 'evacuate') within a second, claims them, and evacuates each host's "
        "instances with bounded concurrency, following each to its end; a claim left by a "
        "copy that died is taken over. Safety gates: a host Nova sees up is never evacuated, "
        "and when too many hosts are down at once nothing is evacuated automatically. When "
        "an evacuated host returns, it clears its force-down and re-enables it."
    ),
    parameters=PARAMETERS,
    actions=(
        Action("start", timeout=20, handler=start),
        Action("stop", timeout=60, handler=stop),
        Action("monitor", timeout=20, interval=10, depth=0, handler=monitor),
        Action("validate-all", timeout=20, handler=validate_all),
    ),
)


def main() -> None:
    sys.exit(ocf.run(AGENT, sys.argv[1:]))


if __name__ == "__main__":
    main()
