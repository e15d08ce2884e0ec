# cython: freethreading_compatible = True
"""Checked arrays: what the kernels may read and write through raw pointers.

A kernel reads its inputs and writes its outputs through typed pointers (``const uint64_t*`` and
the like), which is defined behaviour only for memory that is aligned for the type, in the
machine's byte order, and laid out C-contiguously. Every kernel takes its arrays through the two
checks here (numpy.random's ``_common.pyx``, ``check_output``, is the model):

- an input that is not such an array is *copied* into one (a misaligned, byte-swapped, strided
  or differently typed array gives the right answer, at the price of a copy that only such
  inputs pay);
- an output (``out=``) that is not one is *refused* with an error naming the argument: a
  result written anywhere but where the caller asked would be lost.

Masked arrays are refused either way (their mask would be ignored), naming the argument and
suggesting ``.filled()`` or ``.compressed()``. Overlap between an output and an input is
detected here too; the kernels that read an input while writing their output compute into a
temporary then.
"""

from libc.stdint cimport uintptr_t

cimport numpy as cnp

import numpy as np

cnp.import_array()

cdef int _SOUND = cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED


cdef int refuse_masked(object arr, str argname) except -1:
    if isinstance(arr, np.ma.MaskedArray):
        raise TypeError(f"{argname}: a numpy masked array is not accepted (its mask would be "
                        f"ignored); pass arr.filled(value) to replace the masked items, or "
                        f"arr.compressed() to drop them")
    return 0


cdef object checked_input(object arr, object dtype, str argname):
    cdef cnp.ndarray a
    if type(arr) is not np.ndarray:
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"{argname} must be a numpy array, got {type(arr).__name__}")
        refuse_masked(arr, argname)
    a = <cnp.ndarray>arr
    # Subclasses that keep their data as an ndarray does (np.memmap) are read in place.
    if (cnp.PyArray_FLAGS(a) & _SOUND) == _SOUND and \
            cnp.PyArray_EquivTypes(a.descr, <cnp.dtype>dtype):
        return arr
    # A new array from numpy's allocator is aligned, C-contiguous and in native byte order.
    return np.array(arr, dtype=dtype, order="C", copy=True, subok=False)


cdef object checked_output(object out, object dtype, tuple shape, str argname):
    cdef cnp.ndarray a
    cdef int flags
    if out is None:
        return np.empty(shape, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{argname} must be a numpy.ndarray of {(<cnp.dtype>dtype).name}, got "
                        f"{type(out).__name__}")
    refuse_masked(out, argname)
    a = <cnp.ndarray>out
    if not cnp.PyArray_EquivTypes(a.descr, <cnp.dtype>dtype):
        if out.dtype.newbyteorder("=") == dtype:
            raise TypeError(f"{argname} must be in native byte order ({(<cnp.dtype>dtype).name}), "
                            f"got dtype {out.dtype.str}")
        raise TypeError(f"{argname} must have dtype {(<cnp.dtype>dtype).name}, got {out.dtype}")
    if out.shape != shape:
        if len(shape) == 1:
            raise ValueError(f"{argname} must be 1-dimensional with length {shape[0]} (one per "
                             f"key), got shape {out.shape}")
        raise ValueError(f"{argname} must have shape {shape}, got {out.shape}")
    flags = cnp.PyArray_FLAGS(a)
    if not flags & cnp.NPY_ARRAY_WRITEABLE:
        raise ValueError(f"{argname} is read-only: pass a writeable array")
    if not flags & cnp.NPY_ARRAY_C_CONTIGUOUS:
        raise ValueError(f"{argname} must be C-contiguous (a strided view is not: pass "
                         f"np.empty(...) or a contiguous slice)")
    if not flags & cnp.NPY_ARRAY_ALIGNED:
        raise ValueError(f"{argname} is not aligned for its {out.dtype.itemsize}-byte items "
                         f"(a view at an odd byte offset): pass an aligned array")
    return out


cdef inline void _extent(cnp.ndarray a, uintptr_t* lo, uintptr_t* hi) noexcept:
    """The bytes [lo, hi) that an array's items span; lo == hi when it has none."""
    cdef int d, nd = cnp.PyArray_NDIM(a)
    cdef cnp.npy_intp* dims = cnp.PyArray_DIMS(a)
    cdef cnp.npy_intp* strides = cnp.PyArray_STRIDES(a)
    cdef uintptr_t start = <uintptr_t>cnp.PyArray_DATA(a)
    cdef uintptr_t low = start, high = start
    for d in range(nd):
        if dims[d] == 0:
            lo[0] = start
            hi[0] = start
            return
        if strides[d] < 0:
            low -= <uintptr_t>((dims[d] - 1) * -strides[d])
        else:
            high += <uintptr_t>((dims[d] - 1) * strides[d])
    lo[0] = low
    hi[0] = high + <uintptr_t>cnp.PyArray_ITEMSIZE(a)


cdef bint overlaps(object out, object arr) except -1:
    cdef uintptr_t olo, ohi, alo, ahi
    cdef cnp.ndarray o = <cnp.ndarray?>out
    cdef cnp.ndarray a = <cnp.ndarray?>arr
    _extent(o, &olo, &ohi)
    _extent(a, &alo, &ahi)
    if olo >= ohi or alo >= ahi or olo >= ahi or alo >= ohi:
        return False
    # The very same items, in the same layout: an element-wise kernel reads item i before it
    # writes item i, so working in place is sound.
    if (olo == alo and ohi == ahi and cnp.PyArray_ITEMSIZE(o) == cnp.PyArray_ITEMSIZE(a)
            and (cnp.PyArray_FLAGS(a) & cnp.NPY_ARRAY_C_CONTIGUOUS)):
        return False
    return True


cdef bint overlaps_range(object out, size_t address, size_t size) except -1:
    cdef uintptr_t olo, ohi
    _extent(<cnp.ndarray?>out, &olo, &ohi)
    if size == 0 or olo >= ohi:
        return False
    return olo < <uintptr_t>address + size and <uintptr_t>address < ohi
