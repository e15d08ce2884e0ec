"""Placements that route exactly like the clients and proxies already deployed.

A key routed to another server than the one the other clients use is a cache miss or a lost
write, silently. Each function here builds a placement that sends every key where that program
sends it, quirks included, with ringkit's batch lookups:

* :func:`twemproxy`: a nutcracker pool (its YAML), ketama or modula, every key hash it offers;
* :func:`libmemcached`: libmemcached's KETAMA_WEIGHTED and KETAMA continuums (pylibmc);
* :func:`uhashring`: uhashring's default and ketama rings;
* :func:`pymemcache`: pymemcache HashClient's rendezvous hashing.

Every placement has ``get(key)``, ``get_many(keys, out=None)`` (lists, numpy and pyarrow in,
int32 indices into ``nodes`` out, computed without the GIL) and ``nodes``, named as the program
names its servers; ``preference_list`` where the program has one (uhashring). Which ringkit call
routes like which setting, and the test that proves it, is tabled in README.md.

:meth:`ringkit.HashRing.ketama` stays libketama's continuum (double-precision shares); for
twemproxy's and libmemcached's, which compute them in single precision, use these.
"""

from ringkit.compat._continuum import HASHES, ProgramRing
from ringkit.compat._libmemcached import LibmemcachedRing, libmemcached
from ringkit.compat._pymemcache import PymemcacheRendezvous, pymemcache
from ringkit.compat._twemproxy import TwemproxyModula, TwemproxyRing, twemproxy
from ringkit.compat._uhashring import UhashringRing, uhashring

__all__ = [
    "HASHES",
    "LibmemcachedRing",
    "ProgramRing",
    "PymemcacheRendezvous",
    "TwemproxyModula",
    "TwemproxyRing",
    "UhashringRing",
    "libmemcached",
    "pymemcache",
    "twemproxy",
    "uhashring",
]
