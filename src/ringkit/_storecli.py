"""``ringkit store``: the operator's command for a ReplicatedStore on Redis servers.

    ringkit store status    --node a=redis://10.0.0.1:6379/0 --node b=... --node c=...
    ringkit store repair    --config store.toml
    ringkit store rebalance --config store.toml --joining d=redis://10.0.0.4:6379/0 --dry-run
    ringkit store migrate   --config store.toml      # data written by ringkit 0.1

Nodes come from repeated ``--node NAME=URL`` or from a config file (TOML or JSON) with a
``nodes`` table of names to URLs and optional ``prefix``, ``store_id``, ``replicas``,
``write_quorum``, ``read_quorum``, ``timeout``, ``joining`` and ``leaving``. The names are the
store's node names: they place the keys, so they must be the ones the applications use.

Long work shows a progress bar (keys/s, ETA) when standard error is a terminal, and a plain line
every few seconds otherwise. Exit codes: 0 when the work completed on every node (``status``:
every node up, ready and its digests agreeing), 1 otherwise or on a runtime error, 2 on a usage
error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["add_store_command"]

_OPTIONS = ("prefix", "store_id", "replicas", "write_quorum", "read_quorum", "timeout")


class StoreUsageError(Exception):
    """Bad arguments found after parsing (exit code 2)."""


def _node_spec(text: str, argname: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not name or not url:
        raise StoreUsageError(f"{argname}: expected NAME=URL (a=redis://host:6379/0), got "
                              f"{text!r}")
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise StoreUsageError(f"{argname} {name}: the URL must start with redis://, rediss:// "
                              f"or unix://, got {url!r}")
    return name, url


def _load_config(path: str) -> dict[str, Any]:
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".json"):
        try:
            config = json.loads(data)
        except json.JSONDecodeError as exc:
            raise StoreUsageError(f"--config {path}: not JSON: {exc}") from None
    else:
        try:
            import tomllib  # type: ignore[import-not-found,unused-ignore]
        except ImportError:  # Python 3.10
            raise StoreUsageError(f"--config {path}: TOML needs Python 3.11; give a .json "
                                  f"file") from None
        try:
            config = tomllib.loads(data.decode())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise StoreUsageError(f"--config {path}: not TOML: {exc}") from None
    if not isinstance(config, dict):
        raise StoreUsageError(f"--config {path}: expected a table at the top")
    unknown = set(config) - {"nodes", "joining", "leaving", *_OPTIONS}
    if unknown:
        raise StoreUsageError(f"--config {path}: unknown settings {sorted(unknown)}")
    for table in ("nodes", "joining", "leaving"):
        value = config.get(table, {})
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise StoreUsageError(f"--config {path}: {table} must map names to URLs")
    return config


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    config: dict[str, Any] = _load_config(args.config) if args.config else {}
    nodes = {}
    for table, given, flag in (("nodes", args.node, "--node"), ("joining", args.joining,
                                                                "--joining"),
                               ("leaving", args.leaving, "--leaving")):
        found = dict(config.get(table, {}))
        for text in given or ():
            name, url = _node_spec(text, flag)
            if name in found:
                raise StoreUsageError(f"{flag}: node {name!r} is given twice")
            found[name] = url
        for name, url in found.items():
            _node_spec(f"{name}={url}", flag)
            if name in nodes:
                raise StoreUsageError(f"{flag}: node {name!r} is given twice")
            nodes[name] = (table, url)
    if not any(t == "nodes" for t, _ in nodes.values()):
        raise StoreUsageError("no nodes: give --node NAME=URL (repeatable) or --config FILE")
    if args.command_store != "rebalance" and any(t != "nodes" for t, _ in nodes.values()):
        raise StoreUsageError("--joining and --leaving go with rebalance")
    options = {k: config[k] for k in _OPTIONS if k in config}
    for key in _OPTIONS:
        value = getattr(args, key, None)
        if value is not None:
            options[key] = value
    return {"nodes": nodes, "options": options}


def _open_store(settings: Mapping[str, Any]) -> Any:
    from ringkit.replication import RedisNode, ReplicatedStore

    options = dict(settings["options"])
    timeout = float(options.pop("timeout", 5.0))
    prefix = options.pop("prefix", "ringkit:rep:")
    nodes = {name: RedisNode(url, name=name, prefix=prefix, socket_timeout=timeout)
             for name, (_, url) in settings["nodes"].items()}
    before = {n: node for n, node in nodes.items()
              if settings["nodes"][n][0] in ("nodes", "leaving")}
    store = ReplicatedStore(before, timeout=max(timeout, 2.0), **options)
    for name, (table, _) in settings["nodes"].items():
        if table == "joining":
            store.add_node(name, nodes[name])
        elif table == "leaving":
            store.remove_node(name)
    return store


class _Progress:
    """A progress bar on a terminal (rate, ETA), else a plain line every `every` seconds."""

    def __init__(self, stream: Any, label: str, unit: str, every: float = 5.0) -> None:
        self.stream = stream
        self.label = label
        self.unit = unit
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.every = every
        self.started = time.monotonic()
        self.last: float | None = None       # (the first call always draws)
        self.drawn = False

    def __call__(self, done: int, total: int, keys: int | None = None) -> None:
        if total == 0:
            return      # nothing to walk (every bucket in sync): the report says so
        now = time.monotonic()
        if (not self.tty and self.last is not None and now - self.last < self.every
                and done < total):
            return
        self.last = now
        elapsed = max(now - self.started, 1e-9)
        count = done if keys is None else keys
        rate = count / elapsed
        fraction = done / total if total else 1.0
        eta = (elapsed / fraction - elapsed) if fraction > 0 else 0.0
        text = (f"{self.label}: {done:,}/{total:,} {self.unit} ({fraction:.0%}), "
                f"{count:,} keys, {rate:,.0f} keys/s, ETA {eta:.0f} s")
        if self.tty:
            filled = int(fraction * 24)
            self.stream.write(f"\r[{'#' * filled}{'.' * (24 - filled)}] {text}\033[K")
            self.drawn = True
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _status(args: argparse.Namespace, out: Any, err: Any) -> int:
    store = _open_store(_settings(args))
    with store:
        states = store.probe()
        status = store.digest_status()
        out.write(f"store {store.store_id!r}: {len(states)} nodes, replicas={store.replicas}, "
                  f"write_quorum={store.write_quorum}, read_quorum={store.read_quorum}\n")
        width = max(4, *(len(n) for n in states))
        out.write(f"{'node':<{width}}  {'server':<24} {'state':<10} {'items':>12}\n")
        for name, state in states.items():
            node = store.nodes[name]
            items = status.items.get(name)
            shown = "-" if items is None else f"{items:,}"
            out.write(f"{name:<{width}}  {node.server:<24} {state:<10} {shown:>12}\n")
        if status.buckets:
            share = status.agreeing / status.buckets
            out.write(f"digests: {status.agreeing:,} of {status.buckets:,} buckets holding "
                      f"items agree on every replica ({share:.1%})\n")
        else:
            out.write("digests: no bucket holds items on the nodes that answered\n")
        ok = all(s == "up" for s in states.values()) and not status.unreachable \
            and status.agreeing == status.buckets
        return 0 if ok else 1


def _repair(args: argparse.Namespace, out: Any, err: Any) -> int:
    store = _open_store(_settings(args))
    bar = _Progress(err, "repair", "buckets")
    with store:
        try:
            report = store.repair(progress=lambda done, total, r: bar(done, total,
                                                                      r.keys_scanned))
        finally:
            bar.close()
        out.write(f"repair: {report.keys_checked:,} keys checked ({report.keys_scanned:,} "
                  f"compared one by one in {report.buckets_scanned:,} buckets; "
                  f"{report.buckets_skipped:,} buckets in sync by digest) in "
                  f"{report.seconds:.2f} s\n")
        out.write(f"repaired {report.keys_repaired:,} keys ({report.replicas_repaired:,} "
                  f"replicas, {report.bytes_moved:,} bytes moved); purged "
                  f"{report.tombstones_purged:,} tombstones; delivered "
                  f"{report.hints_delivered:,} hints\n")
        if report.nodes_refilled:
            out.write(f"refilled (ready again): {', '.join(report.nodes_refilled)}\n")
        if report.nodes_unreachable:
            out.write(f"unreachable (not repaired): {', '.join(report.nodes_unreachable)}\n")
            return 1
        return 0


def _rebalance(args: argparse.Namespace, out: Any, err: Any) -> int:
    settings = _settings(args)
    if not any(t != "nodes" for t, _ in settings["nodes"].values()):
        raise StoreUsageError("rebalance needs --joining or --leaving nodes (or joining / "
                              "leaving tables in the config)")
    store = _open_store(settings)
    bar = _Progress(err, "rebalance", "keys")
    with store:
        try:
            if args.dry_run:
                plan = store.plan_rebalance(progress=bar)
            else:
                moved = store.rebalance(progress=bar)
        finally:
            bar.close()
        if args.dry_run:
            out.write(f"rebalance (dry run): {plan.keys:,} keys would move\n")
            for (src, dst), count in sorted(plan.moves.items(),
                                            key=lambda kv: (-kv[1], str(kv[0]))):
                out.write(f"  {src or '(new replica)'} -> {dst or '(dropped)'}: {count:,}\n")
        else:
            out.write(f"rebalance: {moved:,} keys moved\n")
        return 0


def _migrate(args: argparse.Namespace, out: Any, err: Any) -> int:
    from ringkit.replication import RedisNode

    settings = _settings(args)
    prefix = settings["options"].get("prefix", "ringkit:rep:")
    timeout = float(settings["options"].get("timeout", 5.0))
    for name, (_, url) in settings["nodes"].items():
        node = RedisNode(url, name=name, prefix=prefix, socket_timeout=timeout)
        try:
            count = node.migrate()
        finally:
            node.close()
        out.write(f"{name} ({node.server}): {count:,} items converted to layout 2\n")
    return 0


def add_store_command(commands: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    store = commands.add_parser(
        "store", help="status, repair and rebalance of a replicated store on Redis",
        description="Operate a ReplicatedStore whose nodes are Redis servers: status (nodes, "
                    "readiness, items, digest agreement), repair (anti-entropy) and rebalance "
                    "(after nodes join or leave; --dry-run shows what would move).")
    actions = store.add_subparsers(dest="command_store", metavar="ACTION",
                                   parser_class=parser_class)
    actions.required = True
    for name, run, text in (("status", _status, "nodes, readiness, items and digests"),
                            ("repair", _repair, "bring every replica up to date"),
                            ("rebalance", _rebalance, "move keys after nodes join or leave"),
                            ("migrate", _migrate, "convert data of ringkit 0.1 (layout 1) "
                                                  "to layout 2, in place; stop writers "
                                                  "first")):
        sub = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        sub.add_argument("--node", action="append", metavar="NAME=URL",
                         help="a node of the store: its name and redis:// URL (repeatable)")
        sub.add_argument("--config", metavar="FILE",
                         help="TOML or JSON: a nodes table (name = URL) and optional prefix, "
                              "store_id, replicas, write_quorum, read_quorum, timeout, "
                              "joining, leaving")
        sub.add_argument("--prefix", help="the nodes' key prefix (default 'ringkit:rep:')")
        sub.add_argument("--store-id", dest="store_id", help="the store id (default 'default')")
        sub.add_argument("--replicas", type=int, help="replicas per key (default 3)")
        sub.add_argument("--write-quorum", dest="write_quorum", type=int,
                         help="default 2")
        sub.add_argument("--read-quorum", dest="read_quorum", type=int, help="default 2")
        sub.add_argument("--timeout", type=float,
                         help="seconds each server may take per round (default 5)")
        if name == "rebalance":
            sub.add_argument("--joining", action="append", metavar="NAME=URL",
                             help="a node joining the store (repeatable)")
            sub.add_argument("--leaving", action="append", metavar="NAME=URL",
                             help="a node leaving the store: its keys move to the others "
                                  "(repeatable)")
            sub.add_argument("--dry-run", action="store_true",
                             help="only count the keys that would move, from where to where")
        else:
            sub.set_defaults(joining=None, leaving=None, dry_run=False)
        sub.set_defaults(run=_runner(run))


def _runner(run: Callable[[argparse.Namespace, Any, Any], int]
            ) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        from ringkit.cli import UsageError

        try:
            return run(args, sys.stdout, sys.stderr)
        except StoreUsageError as exc:
            raise UsageError(str(exc)) from None
        except ImportError as exc:     # redis-py missing: ringkit[redis]
            raise RuntimeError(str(exc)) from None

    return command

