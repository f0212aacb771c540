"""pylog's one compiled module, pylog._jsonpack (parse=json for the fluentd sink): built where a
C compiler and Python's headers are, else left out without failing the install (pylog then
does the same work in Python: docs/json-logs.md). PYLOG_REQUIRE_EXT=1 makes it required (the
plugin's wheel, scripts/build-wheelhouse.sh). Everything else is in pyproject.toml."""

import os

from setuptools import Extension, setup

setup(
    ext_modules=[Extension(
        "pylog._jsonpack", ["plugin/pylog/_jsonpack.c"], py_limited_api=True,
        define_macros=[("Py_LIMITED_API", "0x030B0000")],
        extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra"],
        optional=os.environ.get("PYLOG_REQUIRE_EXT") != "1")],
    options={"bdist_wheel": {"py_limited_api": "cp311"}},
)
