"""The Keystone token cache of short-lived commands: private or not used at all."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from keystoneauth1.identity import v3

from nova_evacuate.nova import Nova
from nova_evacuate.token_cache import TokenCache


def plugin(password: str = "secret", username: str = "admin") -> v3.Password:  # noqa: S107
    return v3.Password(auth_url="http://keystone.example:5000/v3", username=username,
                       password=password, project_name="admin", user_domain_name="Default",
                       project_domain_name="Default")


def cache(tmp_path: Path, **kw: str) -> TokenCache:
    found = TokenCache.for_plugin(tmp_path / "keystone", plugin(**kw))
    assert found is not None
    return found


def test_a_saved_token_is_read_back_from_a_private_file(tmp_path):
    c = cache(tmp_path)
    assert c.load() is None
    c.save('{"auth_token": "t1"}')
    assert c.load() == '{"auth_token": "t1"}'
    assert stat.S_IMODE(os.stat(c.directory).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(c.path).st_mode) == 0o600
    c.save('{"auth_token": "t2"}')  # replaced, no temporary file left
    assert c.load() == '{"auth_token": "t2"}'
    assert [p.name for p in c.directory.iterdir()] == [c.path.name]
    c.forget()
    assert c.load() is None


def test_each_set_of_credentials_has_its_own_file_and_no_credential_in_its_name(tmp_path):
    paths = {cache(tmp_path).path, cache(tmp_path, password="other").path,
             cache(tmp_path, username="nova").path}
    assert len(paths) == 3
    assert all("secret" not in p.name and "/" not in p.name for p in paths)
    assert cache(tmp_path).path == cache(tmp_path).path


def test_a_directory_others_may_enter_is_neither_read_nor_written(tmp_path):
    c = cache(tmp_path)
    c.save("state")
    c.directory.chmod(0o755)
    assert c.load() is None
    c.save("new")
    c.directory.chmod(0o700)
    assert c.load() == "state"


def test_a_file_others_may_read_or_a_link_is_not_trusted(tmp_path):
    c = cache(tmp_path)
    c.save("state")
    c.path.chmod(0o644)
    assert c.load() is None
    c.path.unlink()
    elsewhere = tmp_path / "planted"
    elsewhere.write_text("planted")
    elsewhere.chmod(0o600)
    c.path.symlink_to(elsewhere)
    assert c.load() is None


def test_a_cache_that_cannot_be_written_costs_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    c = TokenCache.for_plugin(blocker / "keystone", plugin())
    assert c is not None
    c.save("state")  # no exception: the next run authenticates with the password
    assert c.load() is None


class FakeAuth:
    """What Nova uses of a keystoneauth identity plugin."""

    def __init__(self) -> None:
        self.state: str | None = None

    def set_auth_state(self, data: str | None) -> None:
        if data is not None:
            json.loads(data)  # as keystoneauth does: a corrupt state raises
        self.state = data

    def get_auth_state(self) -> str | None:
        return self.state


class FakeConnection:
    def __init__(self) -> None:
        self.session = type("Session", (), {})()
        self.session.auth = FakeAuth()
        self.session.get_token = self.authenticate

    def authenticate(self) -> str:
        if self.session.auth.state is None:
            self.session.auth.state = '{"auth_token": "fresh"}'
        return "token"


def test_nova_starts_from_the_saved_token_and_saves_a_new_one(tmp_path):
    c = cache(tmp_path)
    conn = FakeConnection()
    Nova(conn, token_cache=c)._guard("get a Keystone token", None, conn.session.get_token)
    assert c.load() == '{"auth_token": "fresh"}'  # authenticated: saved for the next run

    again = FakeConnection()
    Nova(again, token_cache=c)
    assert again.session.auth.state == '{"auth_token": "fresh"}'  # no password check


@pytest.mark.parametrize("saved", ["not json", '{"auth_token": '])
def test_an_unreadable_saved_token_is_dropped_and_the_password_used(tmp_path, saved):
    c = cache(tmp_path)
    c.save(saved)
    conn = FakeConnection()
    nova = Nova(conn, token_cache=c)
    assert conn.session.auth.state is None
    assert c.load() is None
    nova._guard("get a Keystone token", None, conn.session.get_token)
    assert c.load() == '{"auth_token": "fresh"}'


def test_an_evacuation_connection_starts_from_the_workers_token():
    worker, evacuation = FakeConnection(), FakeConnection()
    Nova(worker)._guard("get a Keystone token", None, worker.session.get_token)
    Nova(evacuation).adopt_token(Nova(worker))
    assert evacuation.session.auth.state == '{"auth_token": "fresh"}'
    Nova(evacuation).adopt_token(Nova(FakeConnection()))  # nothing to adopt: left as it is
    assert evacuation.session.auth.state == '{"auth_token": "fresh"}'
