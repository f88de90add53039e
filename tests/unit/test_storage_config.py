"""``[storage]`` checked as a whole when the configuration is loaded: with the disk check on
(rbd_pool set) the Ceph files the engine will hand to ``rbd`` and ``ceph`` must be readable
regular files, refused in one line ``[storage] <option>: ...`` otherwise; with it off nothing
but each value alone (a malformed storage_map) is checked.

Permission checks do not apply to root, who runs these tests in CI: a truly unreadable file
is tested only when not root; the refusal's wording is tested by making ``open`` fail."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nova_evacuate import conf as confmod
from nova_evacuate.conf import ConfigValueError
from nova_evacuate.conf import storage as storage_conf

SECRET = "AQBsecretsecretsecretsecretsecret=="


@pytest.fixture
def ceph_files(tmp_path: Path) -> tuple[Path, Path]:
    """A ceph.conf and a keyring, both readable regular files."""
    ceph_conf = tmp_path / "ceph.conf"
    ceph_conf.write_text("[global]\nmon_host = 192.0.2.1\n", encoding="utf-8")
    keyring = tmp_path / "evacuate.keyring"
    keyring.write_text(f"[client.openstack-ha-evacuate]\nkey = {SECRET}\n", encoding="utf-8")
    keyring.chmod(0o600)
    return ceph_conf, keyring


def write_storage(tmp_path: Path, **options: str) -> str:
    path = tmp_path / "openstack-ha.conf"
    lines = ["[storage]", *(f"{name} = {value}" for name, value in options.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def refusal(config_file: str) -> str:
    with pytest.raises(ConfigValueError) as refused:
        confmod.load([config_file])
    message = str(refused.value)
    assert "\n" not in message and SECRET not in message
    return message


# ---------------------------------------------------------------------------- accepted


def test_a_complete_storage_section_loads(tmp_path, ceph_files):
    ceph_conf, keyring = ceph_files
    loaded = confmod.load([write_storage(
        tmp_path, rbd_pool="vms", ceph_conf=str(ceph_conf), ceph_user="openstack-ha-evacuate",
        ceph_keyring_file=str(keyring), storage_map="compute-1=10.0.1.11+10.0.2.11",
        release_wait="30", check_timeout="5")])
    storage = loaded.storage
    assert (storage.rbd_pool, storage.ceph_conf, storage.ceph_keyring_file) == (
        "vms", str(ceph_conf), str(keyring))
    assert (storage.release_wait, storage.check_timeout) == (30.0, 5.0)


def test_without_a_keyring_ceph_searches_its_default_path(tmp_path, ceph_files):
    ceph_conf, _ = ceph_files
    confmod.load([write_storage(tmp_path, rbd_pool="vms", ceph_conf=str(ceph_conf))])
    confmod.load([write_storage(tmp_path, rbd_pool="vms", ceph_conf=str(ceph_conf),
                                ceph_keyring_file="")])


def test_a_link_to_a_readable_file_is_accepted(tmp_path, ceph_files):
    ceph_conf, keyring = ceph_files
    link = tmp_path / "link.keyring"
    link.symlink_to(keyring)
    confmod.load([write_storage(tmp_path, rbd_pool="vms", ceph_conf=str(ceph_conf),
                                ceph_keyring_file=str(link))])


@pytest.mark.parametrize("rbd_pool", [None, ""], ids=["unset", "empty"])
def test_with_the_disk_check_off_the_files_are_not_checked(tmp_path, rbd_pool):
    options = {"ceph_conf": str(tmp_path / "no-ceph.conf"),
               "ceph_keyring_file": str(tmp_path / "no.keyring"), "ceph_user": "client.x"}
    if rbd_pool is not None:
        options["rbd_pool"] = rbd_pool
    loaded = confmod.load([write_storage(tmp_path, **options)])
    assert not loaded.storage.rbd_pool


def test_no_configuration_at_all_loads():
    assert confmod.load([]).storage.rbd_pool is None


# ---------------------------------------------------------------------------- refused


def test_with_the_disk_check_off_a_malformed_storage_map_is_still_refused(tmp_path):
    message = refusal(write_storage(tmp_path, storage_map="compute-1=nowhere"))
    assert message.startswith("[storage] storage_map: entry 1")


def test_a_missing_ceph_conf_is_refused(tmp_path, ceph_files):
    _, keyring = ceph_files
    missing = tmp_path / "missing" / "ceph.conf"
    message = refusal(write_storage(tmp_path, rbd_pool="vms", ceph_conf=str(missing),
                                    ceph_keyring_file=str(keyring)))
    assert message == f"[storage] ceph_conf: {missing} does not exist"


def test_an_empty_ceph_conf_is_refused(tmp_path):
    message = refusal(write_storage(tmp_path, rbd_pool="vms", ceph_conf=""))
    assert message.startswith("[storage] ceph_conf: empty")


def test_a_missing_keyring_is_refused(tmp_path, ceph_files):
    ceph_conf, _ = ceph_files
    missing = tmp_path / "gone.keyring"
    message = refusal(write_storage(tmp_path, rbd_pool="vms", ceph_conf=str(ceph_conf),
                                    ceph_keyring_file=str(missing)))
    assert message == f"[storage] ceph_keyring_file: {missing} does not exist"


def test_a_dangling_link_as_keyring_does_not_exist(tmp_path, ceph_files):
    ceph_conf, _ = ceph_files
    link = tmp_path / "dangling.keyring"
    link.symlink_to(tmp_path / "nowhere")
    message = refusal(write_storage(tmp_path, rbd_pool="vms", ceph_conf=str(ceph_conf),
                                    ceph_keyring_file=str(link)))
    assert message == f"[storage] ceph_keyring_file: {link} does not exist"


@pytest.mark.parametrize("option", ["ceph_conf", "ceph_keyring_file"])
def test_a_directory_is_not_a_regular_file(tmp_path, ceph_files, option):
    ceph_conf, keyring = ceph_files
    options = {"rbd_pool": "vms", "ceph_conf": str(ceph_conf), "ceph_keyring_file": str(keyring)}
    options[option] = str(tmp_path)
    message = refusal(write_storage(tmp_path, **options))
    assert message == f"[storage] {option}: {tmp_path} is not a regular file"


def test_a_fifo_keyring_is_refused_without_opening_it(tmp_path, ceph_files):
    ceph_conf, _ = ceph_files
    fifo = tmp_path / "keyring.fifo"
    os.mkfifo(fifo)  # opening it for reading would block with no writer
    message = refusal(write_storage(tmp_path, rbd_pool="vms", ceph_conf=str(ceph_conf),
                                    ceph_keyring_file=str(fifo)))
    assert message == f"[storage] ceph_keyring_file: {fifo} is not a regular file"


def test_an_unreadable_keyring_is_refused_without_its_contents(tmp_path, ceph_files, monkeypatch):
    """Root reads any file, so the refusal is made to happen: ``open`` says what a 0600 file
    of another user would."""
    ceph_conf, keyring = ceph_files

    def denied(path, *args, **kwargs):
        if os.fspath(path) == str(keyring):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(storage_conf, "open", denied, raising=False)
    message = refusal(write_storage(tmp_path, rbd_pool="vms", ceph_conf=str(ceph_conf),
                                    ceph_keyring_file=str(keyring)))
    assert message == f"[storage] ceph_keyring_file: {keyring} cannot be read: Permission denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file: permissions do not apply")
def test_a_keyring_of_another_user_is_refused(tmp_path, ceph_files):
    ceph_conf, keyring = ceph_files
    keyring.chmod(0)
    message = refusal(write_storage(tmp_path, rbd_pool="vms", ceph_conf=str(ceph_conf),
                                    ceph_keyring_file=str(keyring)))
    assert message == f"[storage] ceph_keyring_file: {keyring} cannot be read: Permission denied"


@pytest.mark.skipif(os.geteuid() == 0, reason="root searches any directory")
def test_a_keyring_in_a_closed_directory_is_refused(tmp_path, ceph_files):
    ceph_conf, _ = ceph_files
    closed = tmp_path / "closed"
    closed.mkdir()
    (closed / "k").write_text("x", encoding="utf-8")
    closed.chmod(0)
    try:
        message = refusal(write_storage(tmp_path, rbd_pool="vms", ceph_conf=str(ceph_conf),
                                        ceph_keyring_file=str(closed / "k")))
    finally:
        closed.chmod(0o700)
    assert message == (f"[storage] ceph_keyring_file: {closed / 'k'} cannot be read:"
                       " Permission denied")


@pytest.mark.parametrize("user", ["client.openstack-ha-evacuate", "two words", "", "a\x1bb"])
def test_a_ceph_user_ceph_cannot_take_is_refused(tmp_path, ceph_files, user):
    ceph_conf, keyring = ceph_files
    message = refusal(write_storage(tmp_path, rbd_pool="vms", ceph_conf=str(ceph_conf),
                                    ceph_keyring_file=str(keyring), ceph_user=user))
    assert message.startswith("[storage] ceph_user: ") and "is not a Ceph user id" in message


def test_check_storage_is_what_load_runs(tmp_path, ceph_files):
    """Callable on its own, on options loaded with the check off and then changed."""
    loaded = confmod.load([write_storage(tmp_path)])
    storage_conf.check_storage(loaded)
    # oslo.config keeps overrides in the option group, which every ConfigOpts shares
    # (register_group copies it shallowly): cleared, or the next load sees them
    try:
        loaded.set_override("rbd_pool", "vms", group="storage")
        loaded.set_override("ceph_conf", str(tmp_path / "none.conf"), group="storage")
        with pytest.raises(ConfigValueError,
                           match=r"^\[storage\] ceph_conf: .* does not exist$"):
            storage_conf.check_storage(loaded)
    finally:
        loaded.clear_override("rbd_pool", group="storage")
        loaded.clear_override("ceph_conf", group="storage")
