# The checked-array helpers are C-level only (cimported by the other kernels through
# _arrays.pxd); at runtime the module holds just Cython's machinery.
from typing import Any, Final

__pyx_capi__: Final[dict[str, Any]]
__test__: dict[str, str]
