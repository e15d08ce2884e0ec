"""pymemcache: ``HashClient``'s rendezvous placement."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ringkit._placement import MurmurRendezvousBase
from ringkit.validation import short


def server_name(spec: object, argname: str) -> str:
    """How HashClient names a server: "host:port" from a (host, port) tuple or a "host:port"
    string ("host" alone is port 11211; "[v6]:port" loses its brackets), a unix socket
    ("/path" or "unix:/path") by its path."""
    if isinstance(spec, tuple):
        if len(spec) != 2:
            raise ValueError(f"{argname}: a server tuple is (host, port), got {short(spec)}")
        host, port = spec
        return f"{host}:{port}"
    if not isinstance(spec, str):
        raise TypeError(f"{argname} must be a (host, port) tuple or a 'host:port' str, got "
                        f"{type(spec).__name__}")
    if not spec:
        raise ValueError(f"{argname} must be a non-empty 'host:port'")
    if spec.startswith("unix:"):
        return spec[5:]
    if spec.startswith("/"):
        return spec
    if ":" not in spec or spec.endswith("]"):
        host, port = spec, "11211"
    else:
        host, port = spec.rsplit(":", 1)
        if not port.isdigit():
            raise ValueError(f"{argname}: {short(spec)} has an invalid port {short(port)}")
        port = str(int(port))
    if host.startswith("["):
        host = host.strip("[]")
    return f"{host}:{port}"


class PymemcacheRendezvous(MurmurRendezvousBase):
    """pymemcache ``HashClient``'s placement (see :func:`ringkit.compat.pymemcache`)."""

    program = "pymemcache"

    def __dask_tokenize__(self) -> object:
        """Dask's token: what the placement places (equal placements, equal tokens)."""
        return (type(self).__module__, type(self).__qualname__, self.__reduce__()[1])

    def __reduce__(self) -> tuple[Any, ...]:
        return (pymemcache, (list(self.nodes),))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PymemcacheRendezvous):
            return NotImplemented
        return sorted(self.nodes) == sorted(other.nodes)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.nodes)))

    def __repr__(self) -> str:
        return f"<pymemcache rendezvous placement: {len(self.nodes)} servers>"


def pymemcache(servers: Iterable[Any]) -> PymemcacheRendezvous:
    """A placement routing every key to the server pymemcache's ``HashClient(servers)`` (4.x)
    sends it to: rendezvous hashing, the highest ``murmur3_32(f"{server}-{key}")`` winning.

    ``servers`` as HashClient takes them: ``(host, port)`` tuples, or ``"host:port"`` strings.
    ``nodes`` are "host:port", in the order given (a repeat counts once). Keys are formatted as
    HashClient formats them (``f"{key}"``: ``b"ab"`` scores as the text ``"b'ab'"``), and the
    score reads each code point cut to 8 bits, as pymemcache's murmur3 does; equal scores go to
    the greater server name, as in pymemcache. Any key is formatted so (``None`` as ``"None"``)
    except a memoryview, whose text would be its address (a TypeError).
    Dead-server removal (``retry_attempts``/``dead_timeout``) is HashClient's run-time state, not
    modelled.
    """
    if isinstance(servers, (str, bytes)) or servers is None:
        raise TypeError(f"servers must be a list of (host, port) tuples or 'host:port' strs, "
                        f"got {type(servers).__name__}")
    names: list[str] = []
    for i, spec in enumerate(servers):
        name = server_name(spec, f"servers[{i}]")
        if name not in names:
            names.append(name)
    if not names:
        raise ValueError("servers must not be empty")
    return PymemcacheRendezvous(names)
