"""The embedded default: a real redis-server child process that starts, answers, keeps its data where told, and
leaves nothing running when stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from dispatcher.state.redis_server import EmbeddedRedis, redis_url

pytestmark = pytest.mark.integration


def running(pid: int) -> bool:
    """True while a process with this pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_embedded_server_starts_answers_and_leaves_no_process_when_stopped(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "state")
    server.start()
    process = server._process
    assert process is not None and running(process.pid)
    client = redis.Redis.from_url(server.url, decode_responses=True)
    assert client.ping() is True
    client.set("greeting", "你好")
    assert client.get("greeting") == "你好"
    assert server.url.startswith("redis://127.0.0.1:")
    client.close()
    server.stop()
    assert process.returncode is not None
    assert not running(process.pid)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(server.url, socket_connect_timeout=1).ping()


def test_the_embedded_server_keeps_its_data_under_the_given_directory(tmp_path: Path) -> None:
    data_dir = tmp_path / "state" / "redis"
    with EmbeddedRedis(data_dir) as server:
        client = redis.Redis.from_url(server.url)
        assert Path(client.config_get("dir")["dir"]).resolve() == data_dir.resolve()
        assert client.config_get("appendonly")["appendonly"] == "yes"
        client.set("k", "v")
        client.close()
    assert (data_dir / "redis.log").is_file()
    assert any(path.name.startswith("appendonly") for path in data_dir.iterdir())


def test_data_written_with_aof_survives_a_restart_in_the_same_directory(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        client = redis.Redis.from_url(server.url)
        client.set("account", "A1")
        client.close()
    with EmbeddedRedis(tmp_path) as server:
        assert redis.Redis.from_url(server.url).get("account") == b"A1"


def test_stopping_twice_is_harmless(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path, appendonly=False).start()
    server.stop()
    server.stop()
    assert server._process is None


def test_a_configured_url_is_used_as_it_is_without_starting_a_server(tmp_path: Path) -> None:
    with redis_url("redis://example.invalid:6379/3", tmp_path) as url:
        assert url == "redis://example.invalid:6379/3"
    assert not (tmp_path / "redis").exists()


def test_without_a_configured_url_an_embedded_server_runs_for_the_block(tmp_path: Path) -> None:
    with redis_url(None, tmp_path) as url:
        client = redis.Redis.from_url(url)
        assert client.ping() is True
        client.close()
        assert (tmp_path / "redis" / "redis.log").is_file()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()


def test_a_server_whose_port_is_taken_fails_to_start_and_leaves_the_other_server_alone(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path / "first", appendonly=False) as first:
        taken = EmbeddedRedis(tmp_path / "second", port=first.port, appendonly=False)
        with pytest.raises(RuntimeError, match="redis.log"):
            taken.start()
        taken.stop()
        assert first._process is not None and first._process.poll() is None
        assert redis.Redis.from_url(first.url).info("server")["process_id"] == first._process.pid
    assert "Address already in use" in (tmp_path / "second" / "redis.log").read_text()
