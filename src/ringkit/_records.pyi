from typing import TypeVar

import numpy as np
import numpy.typing as npt

_V = TypeVar("_V")

__all__ = ["encode_blobs", "next_counters", "pack_apply", "pack_hget", "versions_of"]

def encode_blobs(fields: list[bytes], values: list[bytes | None], counters: npt.ArrayLike,
                 writer_head: bytes, first_seq: int, deleted_ms: int) -> list[bytes]: ...
def pack_apply(sha: bytes, prefix: bytes, floor_key: bytes | None, fields: list[bytes],
               buckets: npt.ArrayLike, blobs: list[bytes], expected: list[bytes] | None,
               ix: npt.ArrayLike | None, chunk: int, chunk_bytes: int) -> list[bytes]: ...
def pack_hget(prefix: bytes, fields: list[bytes], buckets: npt.ArrayLike,
              ix: npt.ArrayLike | None) -> bytes: ...
def versions_of(heads: list[bytes], cls: type[_V]) -> list[_V]: ...
def next_counters(guesses: list[bytes | None], floors: npt.ArrayLike
                  ) -> npt.NDArray[np.int64]: ...
