# The one checker of the arrays that the kernels read and write (numpy.random's _common.pxd,
# check_output, is the model). A kernel reads raw memory through typed pointers, which is only
# defined behaviour for aligned, native-byte-order, C-contiguous memory of the right type: inputs
# that are anything else are copied into such memory, outputs that are anything else are refused
# with an error naming the argument. Cimported by _hashing, _ring and _select.

# `arr` (an ndarray) as an aligned, native-order, C-contiguous array of `dtype` (a numpy.dtype):
# `arr` itself when it already is one, else a converted copy. Masked arrays are refused
# (TypeError naming `argname`): their mask would be ignored.
cdef object checked_input(object arr, object dtype, str argname)

# The array a kernel writes `shape` items of `dtype` into: a new one when `out` is None, else
# `out` itself once it is checked to be a writeable, aligned, C-contiguous ndarray of exactly
# `dtype` (native byte order) and `shape`; anything else raises TypeError/ValueError naming
# `argname`.
cdef object checked_output(object out, object dtype, tuple shape, str argname)

# Whether writing `out` (a C-contiguous ndarray) could change what is read from `arr` (any
# ndarray) before it is read: their bytes overlap, and they are not the very same items (an
# element-wise kernel may write item i over input item i once it has read it).
cdef bint overlaps(object out, object arr) except -1

# Whether the bytes of `out` (a C-contiguous ndarray) overlap [address, address + size).
cdef bint overlaps_range(object out, size_t address, size_t size) except -1

# Refuse a numpy masked array (TypeError naming `argname`, suggesting .filled()/.compressed()).
cdef int refuse_masked(object arr, str argname) except -1
