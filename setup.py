"""Build of ringkit's compiled kernels. Everything else lives in pyproject.toml.

Set RINGKIT_DEBUG=1 to compile with bounds and wraparound checks back on (and without -O3),
for debugging a kernel; release builds leave them off.

Set RINGKIT_SANITIZE to a list of sanitizers (``undefined,address``) to build the kernels
instrumented (gcc or clang): undefined behaviour aborts the process instead of being reported and
ignored. ``nox -s ubsan`` builds and tests such a build; see noxfile.py for how to run it (the
address sanitizer's runtime must be preloaded, Python itself not being instrumented).

A failed compile fails the build: there is no pure-Python fallback to hide a broken kernel.
"""

import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("RINGKIT_DEBUG", "") not in ("", "0")
SANITIZE = os.environ.get("RINGKIT_SANITIZE", "").strip()

directives = {
    "language_level": 3,
    "boundscheck": DEBUG,
    "wraparound": DEBUG,
    "initializedcheck": DEBUG,
    "cdivision": True,
    # help() and inspect.signature show each compiled function's signature with its annotations;
    # the annotations document the Python types and never turn into C conversions (the kernels
    # declare their C types with cdef), so a float passed for an int is refused by the checks,
    # not silently truncated.
    "embedsignature": True,
    "embedsignature.format": "python",
    "annotation_typing": False,
}

if sys.platform == "win32":
    compile_args = ["/O2"]
    link_args: list[str] = []
else:
    compile_args = ["-O0", "-g"] if DEBUG else ["-O3", "-g0"]
    link_args = []
    if SANITIZE:
        flags = [f"-fsanitize={SANITIZE}", "-fno-omit-frame-pointer", "-g"]
        if "undefined" in SANITIZE.split(","):
            flags.append("-fno-sanitize-recover=undefined")
        compile_args = ["-O1", *flags]
        link_args = [f"-fsanitize={SANITIZE}"]

macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]

extensions = [
    Extension(
        f"ringkit.{name}",
        [f"src/ringkit/{name}.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=macros,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for name in ("_arrays", "_hashing", "_ring", "_select", "_placement", "_records")
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        include_path=["src"],
        # The generated C depends on the directives: regenerate it when a debug build is asked
        # for, so that a .c left by a release build is not compiled without the checks.
        force=DEBUG,
    ),
)
