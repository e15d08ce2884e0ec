from collections.abc import Iterable
from typing import Any, Final, SupportsIndex, final

import numpy as np
import numpy.typing as npt

ALGORITHMS: Final[tuple[str, ...]]

# Cython module machinery present at runtime: the C-API capsules that the other kernels cimport,
# and the doctest registry built from the docstrings.
__pyx_capi__: Final[dict[str, Any]]
__test__: dict[str, str]

# SupportsIndex: ints and numpy integer scalars; numpy bools too. Each hashes like the same int.
def hash64(
    key: str | bytes | bytearray | memoryview | SupportsIndex | np.bool_,
    algorithm: str = "xxh64",
    seed: SupportsIndex = 0,
) -> int: ...
def hash64_many(
    keys: Iterable[Any] | npt.ArrayLike,
    algorithm: str = "xxh64",
    seed: SupportsIndex = 0,
    out: npt.NDArray[np.uint64] | None = None,
) -> npt.NDArray[np.uint64]: ...

# Program hashes, for ringkit.compat (not part of the public API).
PROGRAM_HASHES: Final[dict[str, int]]
FORMS: Final[dict[str, int]]
def program_hash(key: Any, algorithm: int, seed: int = 0) -> int: ...
def program_hash_many(
    keys: Iterable[Any] | npt.ArrayLike, algorithm: int, seed: int = 0
) -> npt.NDArray[np.uint64]: ...
def md5_digests(names: list[bytes]) -> npt.NDArray[np.uint32]: ...

# Internal: a batch's hashes a block at a time, for the batch lookups (cimported by _ring).
@final
class KeyBlocks:
    def __new__(
        cls, batch: object, n: int, algorithm: int, seed: int, argname: str, blocked: bool = True
    ) -> KeyBlocks: ...
    @property
    def start(self) -> int: ...
    @property
    def count(self) -> int: ...
