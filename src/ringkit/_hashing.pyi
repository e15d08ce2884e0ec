from collections.abc import Iterable
from typing import Any, Final, SupportsIndex

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
