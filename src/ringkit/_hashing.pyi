from collections.abc import Iterable
from typing import Any, Final

import numpy as np
import numpy.typing as npt

ALGORITHMS: Final[tuple[str, ...]]

def hash64(key: str | bytes | bytearray | memoryview | int, algorithm: str = "xxh64", seed: int = 0) -> int: ...
def hash64_many(
    keys: Iterable[Any] | npt.ArrayLike,
    algorithm: str = "xxh64",
    seed: int = 0,
    out: npt.NDArray[np.uint64] | None = None,
) -> npt.NDArray[np.uint64]: ...
