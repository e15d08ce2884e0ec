"""``ringkit store``: status, repair, rebalance (--dry-run) and migrate on real redis-servers."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ringkit._storecli import _Progress
from ringkit.cli import main
from ringkit.replication import RedisNode, ReplicatedStore


def run(*argv: str) -> tuple[int, str, str]:
    """The command in a child process, as an operator runs it (stderr is not a terminal)."""
    done = subprocess.run([sys.executable, "-m", "ringkit", "store", *argv],
                          capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr


def node_args(servers: list[Any], names: str = "abc") -> list[str]:
    return [arg for name, s in zip(names, servers) for arg in ("--node", f"{name}={s.url}")]


def loaded(servers: list[Any], n: int = 3000) -> ReplicatedStore:
    nodes = {name: RedisNode(s.url, name=name) for name, s in zip("abc", servers)}
    store = ReplicatedStore(nodes)
    store.initialize()
    store.put_many({f"user:{i}": b"v" for i in range(n)})
    store.repair()
    return store


@pytest.mark.redis
def test_status_repair_and_status_again_after_a_server_lost_its_data(redis_servers) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(3)
    loaded(servers).close()
    code, out, _ = run("status", *node_args(servers))
    assert code == 0, out
    assert "3 nodes, replicas=3" in out
    assert out.count(" up ") == 3 and out.count("3,000") == 3
    assert "agree on every replica (100.0%)" in out
    servers[1].kill()
    servers[1].restart()
    code, out, _ = run("status", *node_args(servers))
    assert code == 1 and "recovering" in out and "(0.0%)" in out
    code, out, err = run("repair", *node_args(servers))
    assert code == 0, err
    assert "3,000 keys checked" in out and "repaired 3,000 keys (3,000 replicas" in out
    assert "refilled (ready again): b" in out
    assert "\r" not in err and "keys/s" in err          # plain lines when not a terminal
    code, out, _ = run("status", *node_args(servers))
    assert code == 0 and "(100.0%)" in out


@pytest.mark.redis
def test_rebalance_dry_run_then_rebalance(redis_servers, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(4)
    loaded(servers[:3]).close()
    config = tmp_path / "store.toml"
    config.write_text("replicas = 3\n[nodes]\n" + "".join(
        f'{name} = "{s.url}"\n' for name, s in zip("abc", servers)))
    joining = ("--joining", f"d={servers[3].url}")
    code, out, _ = run("rebalance", "--config", str(config), *joining, "--dry-run")
    assert code == 0, out
    would = int(out.split("rebalance (dry run): ")[1].split(" keys")[0].replace(",", ""))
    assert 0 < would < 3000 and " -> d: " in out
    # A dry run moves nothing (the new node gets its epoch marker, as any node a store meets).
    assert servers[3].client().keys("ringkit:rep:b:*") == []
    code, out, _ = run("rebalance", "--config", str(config), *joining)
    assert code == 0 and f"rebalance: {would:,} keys moved" in out
    as_json = tmp_path / "store.json"
    as_json.write_text(json.dumps({"nodes": {n: s.url for n, s in zip("abcd", servers)}}))
    code, out, _ = run("status", "--config", str(as_json))
    assert code == 0 and "4 nodes" in out, out
    assert out.count(" up ") == 4


@pytest.mark.redis
def test_migrate_converts_data_of_layout_1(redis_servers) -> None:  # type: ignore[no-untyped-def]
    servers = redis_servers(3)
    for s in servers:
        c = s.client()
        c.set("ringkit:rep:__epoch__", "ready:default:abc")
        c.hset("ringkit:rep:{k}", mapping={"c": 3, "w": "ab" * 14, "v": b"x", "d": 0})
    code, out, err = run("status", *node_args(servers))
    assert code == 1 and "ringkit store migrate" in err and "\n" == err[-1]
    code, out, _ = run("migrate", *node_args(servers))
    assert code == 0 and out.count("1 items converted") == 3
    code, out, _ = run("status", *node_args(servers))
    assert code == 0, out


@pytest.mark.parametrize("argv,text", [
    (["status"], "no nodes"),
    (["status", "--node", "a"], "NAME=URL"),
    (["status", "--node", "a=http://x"], "redis://"),
    (["status", "--node", "a=redis://h", "--node", "a=redis://g"], "twice"),
    (["repair", "--config", "/nonexistent/store.toml"], "store.toml"),
    (["status", "--joining", "a=redis://h"], "unrecognized"),
    (["rebalance", "--node", "a=redis://127.0.0.1:1"], "--joining or --leaving"),
])
def test_bad_arguments_are_one_line_and_exit_2_or_1(argv: list[str], text: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) if "--joining" in argv and argv[0] == "status" \
            else _no_exit():
        code = main(["store", *argv])
        assert code in (1, 2)
    err = capsys.readouterr().err
    assert text in err and err.count("\n") == 1


def test_a_config_with_unknown_settings_is_refused(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "store.toml"
    config.write_text('replica = 3\n[nodes]\na = "redis://h"\n')
    assert main(["store", "status", "--config", str(config)]) == 2
    assert "unknown settings ['replica']" in capsys.readouterr().err
    config.write_text("[nodes\n")
    assert main(["store", "status", "--config", str(config)]) == 2
    assert "not TOML" in capsys.readouterr().err


def test_the_progress_bar_on_a_terminal_shows_rate_and_eta() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    bar = _Progress(stream, "repair", "buckets")
    bar(0, 100, 0)
    bar(50, 100, 5000)
    bar(100, 100, 10000)
    bar.close()
    text = stream.getvalue()
    assert text.count("\r[") == 3 and "50/100 buckets (50%)" in text
    assert "keys/s" in text and "ETA" in text and text.endswith("\n")
    plain = io.StringIO()
    quiet = _Progress(plain, "repair", "buckets", every=3600)
    for done in range(0, 101, 10):
        quiet(done, 100, done)
    assert plain.getvalue().count("\n") == 2             # the first line and the last
    idle = io.StringIO()
    _Progress(idle, "repair", "buckets")(0, 0, 0)          # nothing to walk: no 0/0 line
    assert idle.getvalue() == ""


class _no_exit:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return False
