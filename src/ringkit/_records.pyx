# cython: freethreading_compatible = True
"""The replicated store's batch kernels: the blobs of layout 2 (ringkit.replication.codec) made
for a whole batch, and the RESP of the commands that carry them to Redis, written straight into
one bytes object per command instead of through a Python tuple per argument.

Every function takes Python lists of bytes (keys as UTF-8, blobs, expected versions) and, where
a node gets part of a batch, an index array of the positions it gets; every element's type and
every length is checked before anything is written, so bad input raises instead of corrupting.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem, PyDict_SetItem
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE, PyList_SET_ITEM
from cpython.ref cimport PyObject
from cpython.unicode cimport PyUnicode_AsUTF8String
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.string cimport memcmp, memcpy

cimport cython

from ringkit._hashing cimport xxh64

import numpy as np

__all__ = ["dict_read", "dict_write", "dict_write_if", "encode_blobs", "encode_keys", "heads_of",
           "merge_newest", "next_counters", "pack_apply", "pack_hget", "stale_of", "values_of",
           "versions_of"]

DEF VERSION_HEAD = 42
DEF HEAD = 43
DEF BLOB_HEAD = 51
DEF MAX_COUNTER = 9007199254740991

cdef const char* HEX = b"0123456789abcdef"


cdef inline void _hex(char* out, uint64_t value, int digits) noexcept nogil:
    cdef int i
    for i in range(digits - 1, -1, -1):
        out[i] = HEX[value & 15]
        value >>= 4


cdef inline int _digits(Py_ssize_t value) noexcept nogil:
    cdef int n = 1
    while value >= 10:
        value //= 10
        n += 1
    return n


cdef inline char* _decimal(char* out, Py_ssize_t value) noexcept nogil:
    cdef int n = _digits(value), i
    for i in range(n - 1, -1, -1):
        out[i] = <char>(48 + value % 10)
        value //= 10
    return out + n


cdef inline Py_ssize_t _bulk_size(Py_ssize_t length) noexcept nogil:
    """Bytes of a RESP bulk string of `length` bytes: $<length>\\r\\n<bytes>\\r\\n."""
    return 1 + _digits(length) + 2 + length + 2


cdef inline char* _bulk(char* out, const char* data, Py_ssize_t length) noexcept nogil:
    out[0] = b'$'
    out = _decimal(out + 1, length)
    out[0] = b'\r'
    out[1] = b'\n'
    memcpy(out + 2, data, length)
    out += 2 + length
    out[0] = b'\r'
    out[1] = b'\n'
    return out + 2


cdef inline char* _array(char* out, Py_ssize_t count) noexcept nogil:
    out[0] = b'*'
    out = _decimal(out + 1, count)
    out[0] = b'\r'
    out[1] = b'\n'
    return out + 2


cdef inline char* _bucket_bulk(char* out, const char* prefix, Py_ssize_t plen,
                               uint64_t bucket) noexcept nogil:
    """The bulk string of a bucket's key: <prefix>b:<4 hex digits>."""
    out[0] = b'$'
    out = _decimal(out + 1, plen + 6)
    out[0] = b'\r'
    out[1] = b'\n'
    memcpy(out + 2, prefix, plen)
    out += 2 + plen
    out[0] = b'b'
    out[1] = b':'
    _hex(out + 2, bucket, 4)
    out[6] = b'\r'
    out[7] = b'\n'
    return out + 8


cdef object _bytes_list(object items, str argname, Py_ssize_t n):
    if type(items) is not list:
        raise TypeError(f"{argname} must be a list of bytes, got {type(items).__name__}")
    if PyList_GET_SIZE(items) != n:
        raise ValueError(f"{argname} must have {n} items, got {PyList_GET_SIZE(items)}")
    cdef Py_ssize_t i
    for i in range(n):
        if type(<object>PyList_GET_ITEM(items, i)) is not bytes:
            raise TypeError(f"{argname}[{i}] must be bytes, got "
                            f"{type(<object>PyList_GET_ITEM(items, i)).__name__}")
    return items


cdef object _index(object ix, Py_ssize_t n, str argname):
    """`ix` as a checked intp array of positions < n (None: every position)."""
    if ix is None:
        return np.arange(n, dtype=np.intp)
    arr = np.ascontiguousarray(ix, dtype=np.intp)
    if arr.ndim != 1:
        raise ValueError(f"{argname} must be 1-d")
    if len(arr) and (arr.min() < 0 or arr.max() >= n):
        raise IndexError(f"{argname} has a position outside [0, {n})")
    return arr


@cython.boundscheck(False)
@cython.wraparound(False)
def encode_blobs(list fields, list values, counters, bytes writer_head, uint64_t first_seq,
                 int64_t deleted_ms):
    """The blob of each item (ringkit.replication.codec): version counter ``counters[i]``,
    writer ``writer_head`` (16 hex digits) followed by the sequence number ``first_seq + i``
    in 12 hex digits, the item hash, and ``values[i]`` (None: a tombstone deleted at
    ``deleted_ms``)."""
    cdef Py_ssize_t n = len(fields), i, flen, vlen, dlen
    _bytes_list(fields, "fields", n)
    if len(values) != n:
        raise ValueError(f"values must have {n} items, got {len(values)}")
    cdef const int64_t[::1] cs = np.ascontiguousarray(counters, dtype=np.int64)
    if cs.shape[0] != n:
        raise ValueError(f"counters must have {n} items, got {cs.shape[0]}")
    if len(writer_head) != 16:
        raise ValueError("writer_head must be 16 hex digits")
    if first_seq + <uint64_t>n >= (<uint64_t>1 << 48):
        raise OverflowError("sequence numbers must stay below 16**12")
    if deleted_ms < 0:
        raise ValueError("deleted_ms must be >= 0")
    for i in range(n):
        if cs[i] < 0 or cs[i] > MAX_COUNTER:
            raise ValueError(f"counters[{i}] must be in [0, 2**53), got {cs[i]}")
        v = values[i]
        if v is not None and type(v) is not bytes:
            raise TypeError(f"values[{i}] must be bytes or None, got {type(v).__name__}")
    cdef char tomb[24]
    cdef char* end = _decimal(tomb, <Py_ssize_t>deleted_ms)
    dlen = end - tomb
    cdef const char* wh = PyBytes_AS_STRING(writer_head)
    cdef char* buf = NULL
    cdef Py_ssize_t cap = 0
    cdef char* out
    cdef uint64_t h
    cdef int k
    result = [None] * n
    try:
        for i in range(n):
            field = <bytes>PyList_GET_ITEM(fields, i)
            v = values[i]
            flen = PyBytes_GET_SIZE(field)
            vlen = dlen if v is None else PyBytes_GET_SIZE(v)
            blob = PyBytes_FromStringAndSize(NULL, BLOB_HEAD + vlen)
            out = PyBytes_AS_STRING(blob)
            _hex(out, <uint64_t>cs[i], 14)
            memcpy(out + 14, wh, 16)
            _hex(out + 30, first_seq + <uint64_t>i, 12)
            out[VERSION_HEAD] = b't' if v is None else b'v'
            if flen + HEAD > cap:
                PyMem_Free(buf)
                cap = 2 * (flen + HEAD)
                buf = <char*>PyMem_Malloc(cap)
                if buf == NULL:
                    raise MemoryError()
            memcpy(buf, PyBytes_AS_STRING(field), flen)
            memcpy(buf + flen, out, HEAD)
            h = xxh64(<const uint8_t*>buf, flen + HEAD, 0)
            for k in range(8):
                out[HEAD + k] = <char>((h >> (56 - 8 * k)) & 0xFF)
            if v is None:
                memcpy(out + BLOB_HEAD, tomb, dlen)
            else:
                memcpy(out + BLOB_HEAD, PyBytes_AS_STRING(v), vlen)
            result[i] = blob
    finally:
        PyMem_Free(buf)
    return result


@cython.boundscheck(False)
@cython.wraparound(False)
def pack_apply(bytes sha, bytes prefix, bytes floor_key, list fields, buckets, list blobs,
               list expected, ix, Py_ssize_t chunk, Py_ssize_t chunk_bytes):
    """EVALSHA commands (RESP, one bytes object each) of the write script ``sha`` over the
    items at positions ``ix`` (None: all): at most ``chunk`` items and about ``chunk_bytes``
    of blobs per command. Each item's keys are its bucket's hash (``<prefix>b:<bucket>``); its
    arguments are its key and blob, and with ``expected`` (not None) its expected version too,
    after ``floor_key`` as the script's first key."""
    cdef Py_ssize_t n = len(fields)
    _bytes_list(fields, "fields", n)
    _bytes_list(blobs, "blobs", n)
    cdef bint cas = expected is not None
    if cas:
        _bytes_list(expected, "expected", n)
        if floor_key is None:
            raise ValueError("floor_key is needed with expected")
    cdef const uint64_t[::1] bs = np.ascontiguousarray(buckets, dtype=np.uint64)
    if bs.shape[0] != n:
        raise ValueError(f"buckets must have {n} items, got {bs.shape[0]}")
    cdef const Py_ssize_t[::1] pos = _index(ix, n, "ix")
    if chunk < 1 or chunk_bytes < 1:
        raise ValueError("chunk and chunk_bytes must be >= 1")
    cdef Py_ssize_t m = pos.shape[0], start = 0, stop, i, j, k, size, count, nargs, lead
    cdef Py_ssize_t plen = len(prefix), per = 3 if cas else 2
    cdef const char* pre = prefix
    cdef char* out
    lead = 1 if cas else 0
    commands = []
    while start < m:
        stop = start
        size = 0
        while stop < m and stop - start < chunk:
            size += PyBytes_GET_SIZE(<bytes>PyList_GET_ITEM(blobs, pos[stop]))
            if size > chunk_bytes and stop > start:
                break
            stop += 1
        count = stop - start
        nkeys = count + lead
        nargs = 3 + nkeys + per * count
        total = 1 + _digits(nargs) + 2 + _bulk_size(7) + _bulk_size(len(sha)) \
            + _bulk_size(_digits(nkeys))
        if cas:
            total += _bulk_size(len(floor_key))
        for k in range(start, stop):
            j = pos[k]
            total += _bulk_size(plen + 6)
            total += _bulk_size(PyBytes_GET_SIZE(<bytes>PyList_GET_ITEM(fields, j)))
            total += _bulk_size(PyBytes_GET_SIZE(<bytes>PyList_GET_ITEM(blobs, j)))
            if cas:
                total += _bulk_size(PyBytes_GET_SIZE(<bytes>PyList_GET_ITEM(expected, j)))
        data = PyBytes_FromStringAndSize(NULL, total)
        out = PyBytes_AS_STRING(data)
        out = _array(out, nargs)
        out = _bulk(out, b"EVALSHA", 7)
        out = _bulk(out, PyBytes_AS_STRING(sha), len(sha))
        out[0] = b'$'
        out = _decimal(out + 1, _digits(nkeys))
        out[0] = b'\r'
        out[1] = b'\n'
        out = _decimal(out + 2, nkeys)
        out[0] = b'\r'
        out[1] = b'\n'
        out += 2
        if cas:
            out = _bulk(out, PyBytes_AS_STRING(floor_key), len(floor_key))
        for k in range(start, stop):
            out = _bucket_bulk(out, pre, plen, bs[pos[k]])
        for k in range(start, stop):
            j = pos[k]
            item = <bytes>PyList_GET_ITEM(fields, j)
            out = _bulk(out, PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item))
            item = <bytes>PyList_GET_ITEM(blobs, j)
            out = _bulk(out, PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item))
            if cas:
                item = <bytes>PyList_GET_ITEM(expected, j)
                out = _bulk(out, PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item))
        if out - PyBytes_AS_STRING(data) != total:
            raise AssertionError("pack_apply: size mismatch")
        commands.append(data)
        start = stop
    return commands


@cython.boundscheck(False)
@cython.wraparound(False)
def pack_hget(bytes prefix, list fields, buckets, ix):
    """One bytes object of HGET commands (RESP), one per item at positions ``ix`` (None: all):
    the item's key in its bucket's hash."""
    cdef Py_ssize_t n = len(fields)
    _bytes_list(fields, "fields", n)
    cdef const uint64_t[::1] bs = np.ascontiguousarray(buckets, dtype=np.uint64)
    if bs.shape[0] != n:
        raise ValueError(f"buckets must have {n} items, got {bs.shape[0]}")
    cdef const Py_ssize_t[::1] pos = _index(ix, n, "ix")
    cdef Py_ssize_t m = pos.shape[0], k, total = 0, plen = len(prefix)
    cdef const char* pre = prefix
    cdef char* out
    cdef Py_ssize_t fixed = 4 + _bulk_size(4) + _bulk_size(plen + 6)
    for k in range(m):
        total += fixed + _bulk_size(PyBytes_GET_SIZE(<bytes>PyList_GET_ITEM(fields, pos[k])))
    data = PyBytes_FromStringAndSize(NULL, total)
    out = PyBytes_AS_STRING(data)
    for k in range(m):
        out = _array(out, 3)
        out = _bulk(out, b"HGET", 4)
        out = _bucket_bulk(out, pre, plen, bs[pos[k]])
        item = <bytes>PyList_GET_ITEM(fields, pos[k])
        out = _bulk(out, PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item))
    if out - PyBytes_AS_STRING(data) != total:
        raise AssertionError("pack_hget: size mismatch")
    return data


cdef inline int _unhex(char c) noexcept nogil:
    if 48 <= c <= 57:
        return c - 48
    if 97 <= c <= 102:
        return c - 87
    return -1


@cython.boundscheck(False)
@cython.wraparound(False)
def versions_of(list heads, cls):
    """``cls(counter, writer)`` of each blob (or version head) in ``heads``: the counter from
    its first 14 hex digits, the writer its next 28 characters."""
    cdef Py_ssize_t n = len(heads), i
    cdef int k, d
    cdef uint64_t counter
    cdef const char* p
    _bytes_list(heads, "heads", n)
    new = tuple.__new__
    out = [None] * n
    for i in range(n):
        head = <bytes>PyList_GET_ITEM(heads, i)
        if PyBytes_GET_SIZE(head) < VERSION_HEAD:
            raise ValueError(f"heads[{i}] is not a version: {head[:VERSION_HEAD]!r}")
        p = PyBytes_AS_STRING(head)
        counter = 0
        for k in range(14):
            d = _unhex(p[k])
            if d < 0:
                raise ValueError(f"heads[{i}] is not a version: {head[:VERSION_HEAD]!r}")
            counter = (counter << 4) | <uint64_t>d
        out[i] = new(cls, (counter, head[14:VERSION_HEAD].decode("ascii")))
    return out


@cython.boundscheck(False)
@cython.wraparound(False)
def next_counters(list guesses, floors):
    """The counter of each key's next version: one above its guessed version head (the first
    14 hex digits of ``guesses[i]``), or above ``floors[i]`` where the guess is None."""
    cdef Py_ssize_t n = len(guesses), i
    cdef int k, d
    cdef uint64_t counter
    cdef const char* p
    cdef const int64_t[::1] fl = np.ascontiguousarray(floors, dtype=np.int64)
    if fl.shape[0] != n:
        raise ValueError(f"floors must have {n} items, got {fl.shape[0]}")
    result = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] out = result
    for i in range(n):
        guess = <object>PyList_GET_ITEM(guesses, i)
        if guess is None:
            out[i] = fl[i] + 1
            continue
        if type(guess) is not bytes or PyBytes_GET_SIZE(guess) < 14:
            raise TypeError(f"guesses[{i}] must be a version head or None")
        p = PyBytes_AS_STRING(guess)
        counter = 0
        for k in range(14):
            d = _unhex(p[k])
            if d < 0:
                raise ValueError(f"guesses[{i}] is not a version: {guess[:14]!r}")
            counter = (counter << 4) | <uint64_t>d
        out[i] = <int64_t>counter + 1
    return result


# --------------------------------------------------------------------------------------------------
# MemoryNode's batches (its dict of field -> blob, under the node's lock) and the merge of the
# replies of a batch read.


cdef inline int _newer(object b, object cur):
    """b > cur as bytes compare (the blobs' order is their versions')."""
    cdef Py_ssize_t lb = PyBytes_GET_SIZE(b), lc = PyBytes_GET_SIZE(cur)
    cdef int c = memcmp(PyBytes_AS_STRING(b), PyBytes_AS_STRING(cur), lb if lb < lc else lc)
    return c > 0 or (c == 0 and lb > lc)


@cython.boundscheck(False)
@cython.wraparound(False)
def dict_read(dict items, list fields, ix):
    """``[items.get(f) for f in fields[ix]]`` (ix None: every field)."""
    cdef Py_ssize_t n = len(fields), k, m
    _bytes_list(fields, "fields", n)
    if ix is None:
        out = [None] * n
        for k in range(n):
            found = <object>PyList_GET_ITEM(fields, k)
            ref = PyDict_GetItem(items, found)
            if ref is not NULL:
                out[k] = <object>ref
        return out
    cdef const Py_ssize_t[::1] pos = _index(ix, n, "ix")
    m = pos.shape[0]
    out = [None] * m
    for k in range(m):
        ref = PyDict_GetItem(items, <object>PyList_GET_ITEM(fields, pos[k]))
        if ref is not NULL:
            out[k] = <object>ref
    return out


@cython.boundscheck(False)
@cython.wraparound(False)
def dict_write(dict items, list fields, list blobs, ix):
    """Store each blob at positions ``ix`` (None: all) whose field holds nothing or an older
    (smaller) blob; whether each was stored."""
    cdef Py_ssize_t n = len(fields), k, i, m
    _bytes_list(fields, "fields", n)
    _bytes_list(blobs, "blobs", n)
    cdef const Py_ssize_t[::1] pos = _index(ix, n, "ix")
    cdef PyObject* ref
    m = pos.shape[0]
    out = [False] * m
    for k in range(m):
        i = pos[k]
        field = <object>PyList_GET_ITEM(fields, i)
        blob = <object>PyList_GET_ITEM(blobs, i)
        ref = PyDict_GetItem(items, field)
        if ref is NULL or _newer(blob, <object>ref):
            PyDict_SetItem(items, field, blob)
            out[k] = True
    return out


@cython.boundscheck(False)
@cython.wraparound(False)
def dict_write_if(dict items, list fields, list blobs, list expected, ix, bytes floor):
    """Store each blob at positions ``ix`` (None: all) only where its field's blob starts with
    exactly ``expected[i]`` (a version head; b"" for absent, and then only where the blob's
    14-digit counter is above ``floor``, 14 hex digits); whether each was stored."""
    cdef Py_ssize_t n = len(fields), k, i, m, le
    _bytes_list(fields, "fields", n)
    _bytes_list(blobs, "blobs", n)
    _bytes_list(expected, "expected", n)
    if PyBytes_GET_SIZE(floor) != 14:
        raise ValueError(f"floor must be 14 hex digits, got {floor!r}")
    cdef const Py_ssize_t[::1] pos = _index(ix, n, "ix")
    cdef PyObject* ref
    cdef bint ok
    m = pos.shape[0]
    out = [False] * m
    for k in range(m):
        i = pos[k]
        field = <object>PyList_GET_ITEM(fields, i)
        blob = <object>PyList_GET_ITEM(blobs, i)
        want = <object>PyList_GET_ITEM(expected, i)
        le = PyBytes_GET_SIZE(want)
        ref = PyDict_GetItem(items, field)
        if ref is NULL:
            ok = le == 0 and PyBytes_GET_SIZE(blob) >= 14 \
                and memcmp(PyBytes_AS_STRING(blob), PyBytes_AS_STRING(floor), 14) > 0
        else:
            cur = <object>ref
            ok = le > 0 and le <= VERSION_HEAD and PyBytes_GET_SIZE(cur) >= le \
                and (le == VERSION_HEAD or PyBytes_GET_SIZE(cur) == le) \
                and memcmp(PyBytes_AS_STRING(cur), PyBytes_AS_STRING(want), le) == 0
        if ok:
            PyDict_SetItem(items, field, blob)
            out[k] = True
    return out


@cython.boundscheck(False)
@cython.wraparound(False)
def merge_newest(list best, ix, list rows):
    """``best[ix[k]] = rows[k]`` wherever rows[k] is not None and newer (greater) than it:
    one node's replies folded into a batch read's newest blobs, in place."""
    cdef Py_ssize_t n = PyList_GET_SIZE(best), k, i, m
    cdef const Py_ssize_t[::1] pos = _index(ix, n, "ix")
    m = pos.shape[0]
    if PyList_GET_SIZE(rows) != m:
        raise ValueError(f"rows must have {m} items, got {PyList_GET_SIZE(rows)}")
    for k in range(m):
        row = <object>PyList_GET_ITEM(rows, k)
        if row is None:
            continue
        if type(row) is not bytes:
            raise TypeError(f"rows[{k}] must be bytes or None, got {type(row).__name__}")
        i = pos[k]
        cur = <object>PyList_GET_ITEM(best, i)
        if cur is None or (type(cur) is bytes and _newer(row, cur)):
            best[i] = row
    return None


@cython.boundscheck(False)
@cython.wraparound(False)
def stale_of(list best, ix, list rows):
    """The positions ``ix[k]`` (an intp array) where a node answered ``rows[k]`` that is not
    the newest blob ``best[ix[k]]`` (which is not None): the replies to repair."""
    cdef Py_ssize_t n = PyList_GET_SIZE(best), k, i, m, c = 0
    cdef const Py_ssize_t[::1] pos = _index(ix, n, "ix")
    m = pos.shape[0]
    if PyList_GET_SIZE(rows) != m:
        raise ValueError(f"rows must have {m} items, got {PyList_GET_SIZE(rows)}")
    result = np.empty(m, dtype=np.intp)
    cdef Py_ssize_t[::1] out = result
    for k in range(m):
        i = pos[k]
        cur = <object>PyList_GET_ITEM(best, i)
        if cur is None:
            continue
        row = <object>PyList_GET_ITEM(rows, k)
        if row is None or row is not cur and row != cur:
            out[c] = i
            c += 1
    return result[:c]



# --------------------------------------------------------------------------------------------------
# A batch's keys in, its values and version heads out.


@cython.boundscheck(False)
@cython.wraparound(False)
def encode_keys(list keys):
    """The UTF-8 bytes of every key, or None when one is not a str or does not encode (the
    caller then finds it and says which)."""
    cdef Py_ssize_t n = PyList_GET_SIZE(keys), i
    out = [None] * n
    for i in range(n):
        key = <object>PyList_GET_ITEM(keys, i)
        if type(key) is not str:
            return None
        try:
            out[i] = PyUnicode_AsUTF8String(key)
        except UnicodeEncodeError:
            return None
    return out


@cython.boundscheck(False)
@cython.wraparound(False)
def values_of(list blobs):
    """Each blob's value: None where the blob is None or a tombstone."""
    cdef Py_ssize_t n = PyList_GET_SIZE(blobs), i, size
    out = [None] * n
    for i in range(n):
        blob = <object>PyList_GET_ITEM(blobs, i)
        if blob is None:
            continue
        if type(blob) is not bytes or PyBytes_GET_SIZE(blob) < BLOB_HEAD:
            raise ValueError(f"blobs[{i}] is not a record")
        if PyBytes_AS_STRING(blob)[VERSION_HEAD] == b't':
            continue
        size = PyBytes_GET_SIZE(blob)
        out[i] = PyBytes_FromStringAndSize(PyBytes_AS_STRING(blob) + BLOB_HEAD, size - BLOB_HEAD)
    return out


@cython.boundscheck(False)
@cython.wraparound(False)
def heads_of(list blobs):
    """Each blob's version head (its first VERSION_HEAD bytes); None where it is None."""
    cdef Py_ssize_t n = PyList_GET_SIZE(blobs), i
    out = [None] * n
    for i in range(n):
        blob = <object>PyList_GET_ITEM(blobs, i)
        if blob is None:
            continue
        if type(blob) is not bytes or PyBytes_GET_SIZE(blob) < VERSION_HEAD:
            raise ValueError(f"blobs[{i}] is not a record")
        out[i] = PyBytes_FromStringAndSize(PyBytes_AS_STRING(blob), VERSION_HEAD)
    return out
