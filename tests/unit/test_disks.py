"""The disk check's pure parts (nova_evacuate/disks.py, nova_evacuate/storage_map.py): who
holds a disk, what Ceph prints, and the storage map both the engine and fence_nova read."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nova_evacuate.conf import ConfigValueError, check_value
from nova_evacuate.conf.storage import OPTS
from nova_evacuate.disks import Watcher, address_ip, holder, parse_watchers
from nova_evacuate.storage_map import addresses_of, parse_storage_map

FAILED = ("10.0.1.11", "fd00::11")


@pytest.mark.parametrize(("watchers", "blocklist", "held"), [
    ([], [], None),
    (["10.0.1.11:0/42"], [], "10.0.1.11:0/42"),
    (["[fd00::11]:0/5"], [], "[fd00::11]:0/5"),
    (["10.0.1.12:0/42"], [], None),  # another host's client
    (["10.0.1.11:0/42"], ["10.0.1.11:0/42"], None),  # this very client blocklisted
    (["10.0.1.11:0/42"], ["10.0.1.11:0/0"], None),  # every client of the address
    (["10.0.1.11:0/42"], ["10.0.1.11:0/41"], "10.0.1.11:0/42"),  # another client of it
    (["10.0.1.12:0/1", "10.0.1.11:0/2"], [], "10.0.1.11:0/2"),
])
def test_the_failed_hosts_unblocked_watcher_holds_the_disk(watchers, blocklist, held):
    found = holder([Watcher(w) for w in watchers], blocklist, FAILED)
    assert (found.address if found else None) == held


def test_without_the_failed_hosts_addresses_every_unblocked_watcher_counts():
    assert holder([Watcher("192.0.2.9:0/1")], [], ()) == Watcher("192.0.2.9:0/1")
    assert holder([Watcher("192.0.2.9:0/1")], ["192.0.2.9:0/0"], ()) is None


def test_entity_addresses_give_their_ip():
    assert address_ip("10.0.1.11:6801/1234") == "10.0.1.11"
    assert address_ip("[fd00:0::11]:0/9") == "fd00::11"


def test_what_ceph_16_prints_for_rbd_status():
    # measured on the lab's Ceph 16.2.15 (the blocklist's: tests/unit/test_fence_storage.py)
    assert parse_watchers('{"watchers":[{"address":"127.0.0.1:0/1270334405","client":4131,'
                          '"cookie":140065661523040}]}') == [Watcher("127.0.0.1:0/1270334405")]
    assert parse_watchers('{"watchers":[]}') == []


@given(st.text(max_size=200))
def test_any_rbd_status_output_parses_or_is_a_value_error(text):
    with contextlib.suppress(ValueError):
        parse_watchers(text)


def test_the_storage_map():
    parsed = parse_storage_map(" compute-1=10.0.1.11+10.0.2.11 , compute-2=fd00:0::12,")
    assert parsed == {"compute-1": ("10.0.1.11", "10.0.2.11"), "compute-2": ("fd00::12",)}
    # IPv6 in brackets too, as Ceph prints it; an address given twice counts once
    assert parse_storage_map("c1=fd00:1:0::11+[fd00:2::11]") == {"c1": ("fd00:1::11", "fd00:2::11")}
    assert parse_storage_map("c1 = 10.0.1.11 + 10.0.1.11") == {"c1": ("10.0.1.11",)}
    assert addresses_of(parsed, "compute-1") == ("10.0.1.11", "10.0.2.11")
    assert addresses_of(parsed, "compute-1.example.org") == ("10.0.1.11", "10.0.2.11")
    assert addresses_of(parsed, "compute-3") == ()


@pytest.mark.parametrize(("text", "says"), [
    ("", "no host=address"),
    ("compute-1", "entry 1 is not host=address"),
    ("compute-1=", "entry 1 is not host=address"),
    ("compute-1=10.0.1.11+", "entry 1: '' is not an IPv4 or IPv6 address"),
    ("compute-1=bmc.example.org", "is not an IPv4 or IPv6 address"),
    ("compute-1=10.0.1.11,COMPUTE-1=10.0.1.12", "mapped twice (entries 1 and 2)"),
    ("com pute=10.0.1.11", "malformed host name"),
    ("compute-1=10.0.1.11:6789", "is not an IPv4 or IPv6 address"),
])
def test_a_bad_storage_map_is_refused_naming_the_entry(text, says):
    with pytest.raises(ValueError) as caught:
        parse_storage_map(text)
    assert says in str(caught.value)


@given(st.text(max_size=300))
def test_any_storage_map_parses_or_is_a_value_error(text):
    try:
        parsed = parse_storage_map(text)
    except ValueError:
        return
    assert parsed and all(addresses for addresses in parsed.values())


def test_a_bad_storage_map_in_the_configuration_stops_the_engine_before_it_acts():
    (opt,) = [o for o in OPTS if o.name == "storage_map"]
    check_value("[storage] storage_map", opt, "compute-1=10.0.1.11")
    with pytest.raises(ConfigValueError, match=r"^\[storage\] storage_map: entry 1"):
        check_value("[storage] storage_map", opt, "compute-1=nowhere")
