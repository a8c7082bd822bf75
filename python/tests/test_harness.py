"""The harness (harness.py) talks only to the server it spawned: a server someone else runs on
the port is refused, loudly on a restart, by moving to another port on a first start."""

import pytest

import harness
from conftest import HarnessError, RedisServer


def test_the_server_answering_is_the_process_spawned(server):
    info = server.client().info("server")
    assert info["process_id"] == server.proc.pid
    assert info["run_id"] == server.run_id


def test_a_restart_on_a_port_another_server_took_fails_loudly(server, tmp_path):
    server.kill()
    d = tmp_path / "stranger"
    d.mkdir()
    stranger = RedisServer(d, module=False, start=False)
    stranger.port = server.port
    stranger.start()
    try:
        with pytest.raises(HarnessError, match=f"port {server.port}"):
            server.start()
        assert not server.is_running()
        # The stranger is untouched.
        assert stranger.client().info("server")["process_id"] == stranger.proc.pid
    finally:
        stranger.stop()


def test_a_first_start_on_a_taken_port_moves_to_another(bare_server, tmp_path, monkeypatch,
                                                        capfd):
    ports = iter([bare_server.port])
    real = harness.free_port
    monkeypatch.setattr(harness, "free_port", lambda: next(ports, None) or real())
    ours = tmp_path / "ours"
    ours.mkdir()
    s = RedisServer(ours)
    try:
        assert s.port != bare_server.port
        assert s.client().info("server")["process_id"] == s.proc.pid
        err = capfd.readouterr().err
        assert f"port {bare_server.port}" in err and "trying another port" in err, err
    finally:
        s.stop()
