"""Build of ringkit's compiled kernels. Everything else lives in pyproject.toml.

Set RINGKIT_DEBUG=1 to compile with bounds and wraparound checks back on (and without -O3),
for debugging a kernel; release builds leave them off.
"""

import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("RINGKIT_DEBUG", "") not in ("", "0")

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}

if sys.platform == "win32":
    compile_args = ["/O2"]
else:
    compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-g0"]

macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]

extensions = [
    Extension(
        f"ringkit.{name}",
        [f"src/ringkit/{name}.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=macros,
        extra_compile_args=compile_args,
    )
    for name in ("_hashing", "_ring", "_select")
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        include_path=["src"],
        # A failed compile must fail the build: never fall back to pure Python.
        force=DEBUG,
    ),
)
