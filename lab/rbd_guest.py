"""A lab guest's disk I/O: a process that holds a server's RBD image as a hypervisor does.

A lab compute node has no hypervisor, so nothing would write a server's disk and a storage fence
would have nothing to stop. This program is that writer. ``run`` opens ``POOL/IMAGE`` through
librbd (Nova's RBD naming: ``vms/<server uuid>_disk``; created if missing, as Nova creates a disk
on boot), continues the record sequence where the previous holder stopped, and every interval
writes one 64-byte ASCII record at offset ``seq * 64``::

    OHA1 seq=<n> host=<host> t=<epoch, 3 decimals>      (spaces up to byte 63, then "\\n")

After each acknowledged write it appends one JSON line to the ack log, ``{"seq", "host",
"image", "t", "ok": true}`` (``t``: when the write was acknowledged). A failed write (the client
was blocklisted: librbd's ConnectionShutdown, ESHUTDOWN) appends ``{"ok": false, "error", ...}``
and exits 3, as a real guest gets an I/O error. SIGTERM or SIGINT: close, exit 0. A startup
failure (no cluster, no image): one line on stderr, exit 2. ``dump`` prints the records an image
holds, opened read-only (it takes no lock). When the record area is full the sequence wraps
round to offset 0 (4 MiB: 65536 records, nine hours at two a second).

A test proves a fence with :func:`fenced_writes_after_takeover`: no record of the fenced host
may follow the new host's first, in sequence order (the image) or in time order (the ack logs).

The exclusive lock, as measured against the lab's Ceph 16.2.15 (lab/ceph.py, memstore, two
processes on 127.0.0.1 with the compute keys, ``rbd_cache=false``):

* QEMU never calls ``rbd_lock_acquire``: librbd takes the lock on the first write (its automatic
  policy) and hands it over to any other client that asks for it. This program does the same,
  and writes its first record as soon as it knows where to continue, so it holds the lock (and a
  watch: ``rbd status``) from its start. A write alone takes 0.3 ms (median).
* Two such writers on one image both go on writing, each at its own pace: the lock ping-pongs,
  every write a request, a release and an acquire (2.5 ms median). The second writer continues
  from the first's last record, so both write the same sequence numbers and in the image the
  hosts alternate. That is the danger the fence prevents: a server evacuated from a host that
  still runs is written by both.
* ``Image.lock_acquire(RBD_LOCK_MODE_EXCLUSIVE)`` switches the holder to librbd's standard
  policy: it refuses every hand-over, and another client's write (or lock_acquire) fails at once
  with EROFS (ReadOnlyImage); once it has released the lock it cannot write again itself. No
  hypervisor behaves like that (live migration needs the hand-over), so it is not used.
* A holder SIGKILLed without a fence keeps its watch until the OSD times it out: a new writer's
  first write waited 28 s, then librbd broke the lock and blocklisted the dead client itself
  (``rbd_blocklist_on_break_lock``; the compute keys' ``profile rbd`` allows it, for 1 h).
* A holder blocklisted by address (``ceph osd blocklist add 127.0.0.1:0/<nonce>``): its next write
  (50 ms after the command returned) failed with ConnectionShutdown (errno 108, ESHUTDOWN), and it
  exited 3 at once. A writer started then took the lock at once (its first write 0.8 s after its
  start, connecting included) and continued from the fenced writer's last record.

A writer costs 24 MiB PSS (46 MiB RSS, 16 threads) and about 1 % of a CPU. It starts writing
0.1 s after its start on an existing image, 1.5 s when it creates the image.

Standard library plus Debian's ``rados`` and ``rbd`` modules (python3-rados, python3-rbd), run
as ``/usr/bin/python3 -I rbd_guest.py``. The pure helpers are imported by tests without those
modules: librbd is imported only inside the functions that use it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

RECORD_SIZE = 64
RECORD_MAGIC = b"OHA1"
_RECORD_RE = re.compile(rb"OHA1 seq=(\d{1,18}) host=([A-Za-z0-9._-]{1,40}) t=(\d{1,12}\.\d{3}) *\n")
# 20 characters leave room for an 11-digit seq (1.5 thousand years at two records a second)
_HOST_RE = re.compile(r"^[A-Za-z0-9._-]{1,20}$")
CONNECT_TIMEOUT = 10  # seconds: a monitor that does not answer is a startup failure, not a hang
SCAN_CHUNK = 1 << 20

EXIT_OK, EXIT_START, EXIT_IO = 0, 2, 3


@dataclass(frozen=True)
class Record:
    """One record: written by HOST with sequence number SEQ at epoch T (the image's record: when
    it was written; an ack log's: when the write was acknowledged)."""

    seq: int
    host: str
    t: float


# ---------------------------------------------------------------------------- pure helpers


def format_record(seq: int, host: str, t: float) -> bytes:
    """The 64 bytes of one record. ValueError if HOST is not a plain host name or it does not
    fit."""
    if not _HOST_RE.match(host):
        raise ValueError(f"host {host!r}: letters, digits, '.', '_' or '-', at most 20")
    text = f"OHA1 seq={seq} host={host} t={t:.3f}".encode()
    if seq < 0 or len(text) > RECORD_SIZE - 1:
        raise ValueError(f"record seq={seq} host={host} does not fit in {RECORD_SIZE} bytes")
    return text.ljust(RECORD_SIZE - 1) + b"\n"


def parse_record(data: bytes) -> Record | None:
    """The record in DATA (exactly one record's 64 bytes), or None: an empty (zeroed) slot, a
    torn or foreign one."""
    if len(data) != RECORD_SIZE or not data.startswith(RECORD_MAGIC):
        return None
    match = _RECORD_RE.fullmatch(data)
    if match is None:
        return None
    seq, host, t = match.groups()
    return Record(int(seq), host.decode("ascii"), float(t))


def records_from_image_bytes(data: bytes) -> list[Record]:
    """Every record in DATA (an image's record area read from offset 0), in offset order."""
    found = []
    for offset in range(0, len(data) - RECORD_SIZE + 1, RECORD_SIZE):
        record = parse_record(data[offset:offset + RECORD_SIZE])
        if record is not None:
            found.append(record)
    return found


def acks_from_log(lines: Iterable[str]) -> tuple[list[Record], list[dict[str, Any]]]:
    """An ack log's acknowledged writes (as Records, ``t`` the ack time) and its error lines.
    Lines that are not JSON objects (a line torn by a kill) are skipped."""
    acks: list[Record] = []
    errors: list[dict[str, Any]] = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if not isinstance(entry, dict):
            continue
        if entry.get("ok") is True:
            acks.append(Record(int(entry["seq"]), str(entry["host"]), float(entry["t"])))
        else:
            errors.append(entry)
    return acks, errors


def fenced_writes_after_takeover(records: Iterable[Record], fenced_host: str, new_host: str,
                                 *, by: str = "seq") -> list[Record]:
    """The records of FENCED_HOST that follow the first record of NEW_HOST, ordered BY "seq"
    (an image's records) or "t" (ack logs, which both hosts' clocks agree on in the lab): after a
    fence that worked, none. Empty when NEW_HOST wrote nothing."""
    if by not in ("seq", "t"):
        raise ValueError(f"by={by!r}: 'seq' or 't'")
    ordered = sorted(records, key=lambda r: (r.seq, r.t) if by == "seq" else (r.t, r.seq))
    first_new = next((r for r in ordered if r.host == new_host), None)
    if first_new is None:
        return []
    key = (lambda r: r.seq) if by == "seq" else (lambda r: r.t)
    return [r for r in ordered if r.host == fenced_host and key(r) > key(first_new)]


# ---------------------------------------------------------------------------- librbd


class StartupError(Exception):
    """The guest could not start: one line for stderr."""


def _connect(conf: str, user: str, keyring: str) -> Any:
    import rados  # here, not at the top: the tests import this module without librados

    cluster = rados.Rados(conffile=conf, rados_id=user, conf={
        "keyring": keyring,
        "rados_mon_op_timeout": str(CONNECT_TIMEOUT),
        "client_mount_timeout": str(CONNECT_TIMEOUT),
        # write-through: an acknowledged write is on the OSD, not in this process's cache
        "rbd_cache": "false",
        "log_to_stderr": "false",
        "err_to_stderr": "false",
    })
    try:
        cluster.connect(timeout=CONNECT_TIMEOUT)
    except BaseException:
        cluster.shutdown()
        raise
    return cluster


def _open_or_create(ioctx: Any, image: str, size_mib: int) -> Any:
    import rbd

    try:
        return rbd.Image(ioctx, image)
    except rbd.ImageNotFound:
        pass
    with contextlib.suppress(rbd.ImageExists):  # another writer created it first: open theirs
        rbd.RBD().create(ioctx, image, size_mib << 20, old_format=False,
                         features=rbd.RBD_FEATURE_LAYERING | rbd.RBD_FEATURE_EXCLUSIVE_LOCK)
    return rbd.Image(ioctx, image)


def _read_records(image: Any) -> list[Record]:
    """Every record of an open image, in offset order."""
    area = image.size() - image.size() % RECORD_SIZE
    found: list[Record] = []
    for offset in range(0, area, SCAN_CHUNK):
        found += records_from_image_bytes(image.read(offset, min(SCAN_CHUNK, area - offset)))
    return found


class _Stop(BaseException):
    """SIGTERM or SIGINT arrived (not an Exception: no handler of librbd errors may swallow it)."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop


def _log_line(log: TextIO, entry: dict[str, Any]) -> None:
    log.write(json.dumps(entry) + "\n")
    log.flush()


def run(args: argparse.Namespace) -> int:
    import rados
    import rbd

    try:
        format_record(0, args.host, time.time())  # a host name that cannot fit: refuse it now
        log = open(args.log, "a", buffering=1, encoding="ascii")  # noqa: SIM115 - open until exit
    except (ValueError, OSError) as exc:
        raise StartupError(str(exc)) from exc
    cluster = ioctx = image = None
    try:
        # From here on SIGTERM/SIGINT stop the guest wherever it is (once a librbd call returns).
        signal.signal(signal.SIGTERM, _raise_stop)
        signal.signal(signal.SIGINT, _raise_stop)
        try:
            cluster = _connect(args.conf, args.id, args.keyring)
            ioctx = cluster.open_ioctx(args.pool)
            image = _open_or_create(ioctx, args.image, args.size_mib)
            slots = image.size() // RECORD_SIZE
            seq = max((r.seq for r in _read_records(image)), default=0) + 1
        except (rados.Error, rbd.Error) as exc:
            raise StartupError(_describe(exc)) from exc
        if slots == 0:
            raise StartupError(f"image {args.pool}/{args.image} is smaller than one record")
        return _write_records(image, slots, seq, args.host, args.image, args.interval, log)
    except _Stop:
        return EXIT_OK
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the close
        for resource in (image, ioctx):
            if resource is not None:
                _quietly(resource.close)
        if cluster is not None:
            _quietly(cluster.shutdown)


def _write_records(image: Any, slots: int, seq: int, host: str, name: str, interval: float,
                   log: TextIO) -> int:
    """Write a record every INTERVAL from SEQ on, and log each ack, until a write fails."""
    import rbd

    next_due = time.monotonic()
    while True:
        try:
            image.write(format_record(seq, host, time.time()), (seq % slots) * RECORD_SIZE)
        except rbd.Error as exc:
            _log_line(log, {"seq": seq, "host": host, "image": name, "t": time.time(), "ok": False,
                            "error": _describe(exc), "errno": getattr(exc, "errno", None)})
            return EXIT_IO
        _log_line(log, {"seq": seq, "host": host, "image": name, "t": time.time(), "ok": True})
        seq += 1
        # Keep the pace, but a write that stalled (on a lock held by a dead client) is not
        # followed by a burst of catch-up writes.
        next_due = max(next_due + interval, time.monotonic())
        time.sleep(max(0.0, next_due - time.monotonic()))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _quietly(close: Any) -> None:
    # closing a blocklisted client's handles may fail: there is nothing left to do about it
    with contextlib.suppress(Exception):
        close()


def dump(args: argparse.Namespace) -> int:
    import rados
    import rbd

    try:
        cluster = _connect(args.conf, args.id, args.keyring)
        try:
            with (cluster.open_ioctx(args.pool) as ioctx,
                  rbd.Image(ioctx, args.image, read_only=True) as image):
                records = _read_records(image)
        finally:
            cluster.shutdown()
    except (rados.Error, rbd.Error) as exc:
        raise StartupError(_describe(exc)) from exc
    print(json.dumps([{"seq": r.seq, "host": r.host, "t": r.t} for r in records]))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rbd_guest", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, what in (("run", "hold IMAGE and write a record every interval"),
                       ("dump", "print the records IMAGE holds, as JSON")):
        command = sub.add_parser(name, help=what)
        command.add_argument("--conf", required=True, help="ceph.conf")
        command.add_argument("--id", required=True, help="the Ceph user, without 'client.'")
        command.add_argument("--keyring", required=True)
        command.add_argument("--pool", default="vms")
        command.add_argument("--image", required=True, help="e.g. <server uuid>_disk")
    run_parser = sub.choices["run"]
    run_parser.add_argument("--host", required=True, help="this node's name, written in each record")
    run_parser.add_argument("--log", required=True, help="the ack log (JSON lines, appended)")
    run_parser.add_argument("--interval", type=float, default=0.5)
    run_parser.add_argument("--size-mib", type=int, default=4, help="size of an image created")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args) if args.command == "run" else dump(args)
    except StartupError as exc:
        print(f"rbd_guest {args.command} {args.pool}/{args.image}: {exc}", file=sys.stderr)
        return EXIT_START


if __name__ == "__main__":
    sys.exit(main())
