"""The ``ringkit`` command and ``python -m ringkit``, run as a user runs them: in a subprocess."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ringkit


def _subprocess_env() -> dict[str, str]:
    """This environment, with PYTHONPATH made absolute (the children run in another directory),
    so a child imports the same ringkit as this process."""
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.pathsep.join(
            os.path.abspath(entry) for entry in env["PYTHONPATH"].split(os.pathsep) if entry
        )
    env.pop("PYTHONSTARTUP", None)
    return env


def _installed_script() -> str | None:
    """The ``ringkit`` console script beside this interpreter, if there is one."""
    return shutil.which("ringkit", path=os.path.dirname(sys.executable))


def _recorded_script() -> Path | None:
    """The console script that the installed ringkit distribution recorded (in its RECORD), if
    the imported ringkit is that installed distribution. None when ringkit is built in place and
    imported from src/ (an in-tree egg-info records no files, and no script)."""
    try:
        dist = importlib.metadata.distribution("ringkit")
    except importlib.metadata.PackageNotFoundError:
        return None
    if dist.read_text("RECORD") is None:
        return None
    package = Path(str(dist.locate_file("ringkit/__init__.py"))).resolve()
    if package != Path(ringkit.__file__).resolve():
        return None
    for file in dist.files or ():
        if file.stem == "ringkit" and file.parent.name in ("bin", "Scripts"):
            return Path(str(dist.locate_file(file))).resolve()
    return None


def _commands() -> list[list[str]]:
    commands = [[sys.executable, "-m", "ringkit"]]
    script = _installed_script()
    if script is not None:
        commands.append([script])
    return commands


COMMANDS = _commands()
COMMAND_IDS = ["python-m-ringkit" if len(c) == 3 else "ringkit-script" for c in COMMANDS]


def _run(command: list[str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args],
        cwd=cwd,
        env=_subprocess_env(),
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )


def test_console_script_is_installed_with_the_package() -> None:
    # Built in place (imported from src/) there is no console script, and only `python -m
    # ringkit` is checked; installed (as in the nox session and CI) the script must be there, and
    # it is the one the tests run.
    recorded = _recorded_script()
    if recorded is not None:
        assert recorded.exists(), recorded
        script = _installed_script()
        assert script is not None, f"no `ringkit` script beside {sys.executable}"
        assert Path(script).resolve() == recorded
        assert [script] in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=COMMAND_IDS)
def test_demo_runs_and_shows_hashing(command: list[str], tmp_path: Path) -> None:
    result = _run(command, "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "hash" in result.stdout.lower()
    for algorithm in ringkit.ALGORITHMS:
        assert algorithm in result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", COMMANDS, ids=COMMAND_IDS)
def test_help_exits_0(command: list[str], tmp_path: Path) -> None:
    result = _run(command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()
    assert "demo" in result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=COMMAND_IDS)
def test_demo_help_exits_0(command: list[str], tmp_path: Path) -> None:
    result = _run(command, "demo", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


@pytest.mark.parametrize("command", COMMANDS, ids=COMMAND_IDS)
def test_version(command: list[str], tmp_path: Path) -> None:
    result = _run(command, "--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert ringkit.__version__ in result.stdout


@pytest.mark.parametrize("command", COMMANDS, ids=COMMAND_IDS)
@pytest.mark.parametrize(
    "args",
    [["no-such-command"], [], ["demo", "--no-such-flag"]],
    ids=["unknown-subcommand", "no-subcommand", "unknown-flag"],
)
def test_usage_errors_exit_2(command: list[str], args: list[str], tmp_path: Path) -> None:
    result = _run(command, *args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "error" in result.stderr.lower() and "--help" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


# -- the tour, inspect and route ------------------------------------------------------------------

PY = [sys.executable, "-m", "ringkit"]


def _one_line_error(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_demo_tours_every_layer(tmp_path: Path) -> None:
    result = _run(PY, "demo", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for section in ("hashing", "consistent-hash ring", "load balancing", "locks", "replication"):
        assert f"== {section}" in result.stdout
    assert "ejected" in result.stdout and "readmitted" in result.stdout
    assert "fencing token" in result.stdout
    assert "refilled" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize("sub", ["inspect", "route"])
def test_subcommand_help(sub: str, tmp_path: Path) -> None:
    result = _run(PY, sub, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--nodes" in result.stdout


def test_inspect_reports_shares_and_movement(tmp_path: Path) -> None:
    result = _run(PY, "inspect", "--nodes", "a,b,c=2", "--keys", "20000", "--add", "d",
                  "--remove", "a", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    ring = ringkit.HashRing({"a": 1, "b": 1, "c": 2})
    keys = [f"key:{i}" for i in range(20000)]
    load = ring.load(keys)
    for name, count in load.counts.items():
        assert f"{count:,}" in out, name
    assert f"max/mean load: {load.max_over_mean:.3f}" in out
    moved = ring.movement(ringkit.HashRing({"b": 1, "c": 2, "d": 1}), keys)
    assert f"{moved.count:,} of 20,000 keys move" in out


def test_inspect_keys_file_and_ketama(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("".join(f"k{i}\n" for i in range(500)))
    result = _run(PY, "inspect", "--nodes", "10.0.0.1:11211,10.0.0.2:11211", "--ketama",
                  "--keys-file", str(keys), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "HashRing.ketama" in result.stdout and "500 keys" in result.stdout


def test_route_lines_match_the_ring(tmp_path: Path) -> None:
    keys = [f"user:{i}" for i in range(1000)]
    source = tmp_path / "keys.txt"
    source.write_text("\n".join(keys) + "\n")
    result = _run(PY, "route", "--nodes", "a,b,c", str(source), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ring = ringkit.HashRing(["a", "b", "c"])
    assert result.stdout.splitlines() == [f"{k}\t{ring.get(k)}" for k in keys]


def test_route_stdin_and_csv_column(tmp_path: Path) -> None:
    ring = ringkit.HashRing(["a", "b"])
    piped = subprocess.run([*PY, "route", "--nodes", "a,b"], input="x\ny\n", cwd=tmp_path,
                           env=_subprocess_env(), capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == f"x\t{ring.get('x')}\ny\t{ring.get('y')}\n"
    table = tmp_path / "t.csv"
    table.write_text("id,name\n1,ann\n2,bob\n")
    result = _run(PY, "route", "--nodes", "a,b", "--column", "name", str(table), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "id,name,node", f"1,ann,{ring.get('ann')}", f"2,bob,{ring.get('bob')}"]


def test_command_errors_are_one_line(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("id\n1\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    _one_line_error(_run(PY, "route", "--nodes", "a", str(tmp_path / "missing.txt"),
                         cwd=tmp_path), 1)
    _one_line_error(_run(PY, "route", "--nodes", "a", str(empty), cwd=tmp_path), 1)
    _one_line_error(_run(PY, "route", "--nodes", "a", "--column", "nope", str(table),
                         cwd=tmp_path), 2)
    _one_line_error(_run(PY, "inspect", "--nodes", "a,b", "--vnodes", "0", cwd=tmp_path), 2)
    _one_line_error(_run(PY, "inspect", "--nodes", "a=-1", cwd=tmp_path), 2)
    _one_line_error(_run(PY, "inspect", "--nodes", "a=x", cwd=tmp_path), 2)
    _one_line_error(_run(PY, "inspect", "--nodes", "a,a", cwd=tmp_path), 2)
    _one_line_error(_run(PY, "inspect", "--nodes", "a", "--remove", "zz", cwd=tmp_path), 2)
    _one_line_error(_run(PY, "inspect", cwd=tmp_path), 2)
    _one_line_error(_run(PY, "inspect", "--nodes", "a", "--keys", "abc", cwd=tmp_path), 2)


def test_server_lists_take_host_port_names(tmp_path: Path) -> None:
    """A colon belongs to the name (memcached servers are named host:port); a weight follows
    '=': --nodes 10.0.0.1,10.0.0.2:11212=2 is two servers, the second of weight 2."""
    result = _run(PY, "inspect", "--nodes", "10.0.0.1,10.0.0.2:11212=2", "--ketama", "--keys",
                  "2000", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ring = ringkit.HashRing.ketama({"10.0.0.1": 1, "10.0.0.2:11212": 2})
    assert repr(ring) in result.stdout
    assert "10.0.0.2:11212" in result.stdout and "11212.0" not in result.stdout
    help_text = _run(PY, "inspect", "--help", cwd=tmp_path).stdout
    assert "NAME[=WEIGHT]" in help_text and "10.0.0.2:11212=2" in " ".join(help_text.split())


@pytest.mark.parametrize("extra", [["--remove", "zz"], ["--add", "a"], ["--add", "d=0"],
                                   ["--plot", "/no/such/folder/out.png"]])
def test_bad_change_arguments_are_refused_before_any_output(tmp_path: Path,
                                                            extra: list[str]) -> None:
    result = _run(PY, "inspect", "--nodes", "a,b", "--keys", "1000", *extra, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""                  # not the whole table, then the error
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bad_byte_is_reported_by_line(tmp_path: Path) -> None:
    source = tmp_path / "keys.txt"
    source.write_bytes(b"one\ntwo\nthr\xffee\nfour\n")
    result = _run(PY, "route", "--nodes", "a,b", str(source), cwd=tmp_path)
    _one_line_error(result, 1)
    assert "line 3" in result.stderr
    table = tmp_path / "t.csv"
    table.write_bytes(b"id,name\n1,ann\n2,b\xc3\n")
    result = _run(PY, "route", "--nodes", "a,b", "--column", "name", str(table), cwd=tmp_path)
    _one_line_error(result, 1)
    assert "line 3" in result.stderr


def test_a_csv_with_a_node_column_gets_no_second_one(tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("id,node\n1,old\n")
    result = _run(PY, "route", "--nodes", "a,b", "--column", "id", str(table), cwd=tmp_path)
    _one_line_error(result, 2)
    assert "--node-column" in result.stderr
    result = _run(PY, "route", "--nodes", "a,b", "--column", "id", "--node-column", "shard",
                  str(table), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    ring = ringkit.HashRing(["a", "b"])
    assert result.stdout.splitlines() == ["id,node,shard", f"1,old,{ring.get('1')}"]


NUTCRACKER_YML = """\
alpha:
  listen: 127.0.0.1:22121
  hash: fnv1a_64
  distribution: ketama
  servers:
   - 127.0.0.1:11211:1
   - 127.0.0.1:11212:1 b
   - 127.0.0.1:11213:2
beta:
  listen: 127.0.0.1:22122
  distribution: modula
  hash: murmur
  servers:
   - 10.0.0.1:11211:1
   - 10.0.0.2:11211:3
"""


def test_route_and_inspect_read_a_twemproxy_config(tmp_path: Path) -> None:
    from ringkit import compat

    config = tmp_path / "nutcracker.yml"
    config.write_text(NUTCRACKER_YML)
    keys = [f"user:{i}" for i in range(2000)]
    source = tmp_path / "keys.txt"
    source.write_text("\n".join(keys) + "\n")
    for pool in ("alpha", "beta"):
        result = _run(PY, "route", "--twemproxy", str(config), "--pool", pool, str(source),
                      cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        placement = compat.twemproxy(config, pool=pool)
        assert result.stdout.splitlines() == [f"{k}\t{placement.get(k)}" for k in keys]
    result = _run(PY, "inspect", "--twemproxy", str(config), "--pool", "alpha", "--keys",
                  "5000", "--remove", "b", "--add", "127.0.0.1:11214:1 d", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    before = compat.twemproxy(config, pool="alpha")
    after = compat.twemproxy({"servers": ["127.0.0.1:11211:1", "127.0.0.1:11213:2",
                                          "127.0.0.1:11214:1 d"], "hash": "fnv1a_64"})
    moved = sum(before.get(f"key:{i}") != after.get(f"key:{i}") for i in range(5000))
    assert f"{moved:,} of 5,000 keys move" in result.stdout
    assert "twemproxy placement: 3 servers" in result.stdout
    # the config has two pools: which one is a usage error, before any output
    result = _run(PY, "route", "--twemproxy", str(config), str(source), cwd=tmp_path)
    _one_line_error(result, 2)
    assert "2 pools" in result.stderr and result.stdout == ""
    result = _run(PY, "inspect", "--twemproxy", str(config), "--pool", "alpha", "--remove",
                  "zz", cwd=tmp_path)
    _one_line_error(result, 2)
    assert "'zz' is not one of the servers" in result.stderr and result.stdout == ""


def test_route_with_libmemcached_servers(tmp_path: Path) -> None:
    from ringkit import compat

    keys = [f"user:{i}" for i in range(1000)]
    source = tmp_path / "keys.txt"
    source.write_text("\n".join(keys) + "\n")
    servers = "10.0.0.1,10.0.0.2:11212=2,10.0.0.3:11213"
    for extra, placement in (
            ([], compat.libmemcached({"10.0.0.1": 1, "10.0.0.2:11212": 2, "10.0.0.3:11213": 1})),
            (["--unweighted", "--hash", "fnv1a_32"],
             compat.libmemcached({"10.0.0.1": 1, "10.0.0.2:11212": 2, "10.0.0.3:11213": 1},
                                 weighted=False, hash="fnv1a_32"))):
        result = _run(PY, "route", "--libmemcached", servers, *extra, str(source), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [f"{k}\t{placement.get(k)}" for k in keys]


@pytest.mark.parametrize("args, message", [
    (["--nodes", "a", "--twemproxy", "x.yml"], "exactly one of"),
    ([], "exactly one of"),
    (["--nodes", "a", "--pool", "p"], "--pool goes with --twemproxy"),
    (["--nodes", "a", "--hash", "md5"], "go with --libmemcached"),
    (["--libmemcached", "a:1", "--ketama"], "go with --nodes"),
    (["--libmemcached", "a:1=1.5"], "must be an integer"),
    (["--libmemcached", "a:1", "--hash", "sha1"], "hash must be one of"),
])
def test_placement_source_errors_exit_2(args: list[str], message: str, tmp_path: Path) -> None:
    result = _run(PY, "inspect", *args, cwd=tmp_path)
    _one_line_error(result, 2)
    assert message in result.stderr and result.stdout == ""
