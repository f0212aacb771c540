"""tests/slow_callbacks.py: a callback over 0.1 s fails a unit test, and is only listed for a test
marked report-only (the e2e tests). Each case runs pytest in a subprocess: the asyncio logger
and loop policy are process-wide, and the inner run's slow callback must not fail this one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent

INNER_TESTS = """
import asyncio
import time


async def _hold_the_loop(seconds):
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def slow_callback():
        time.sleep(seconds)
        done.set_result(None)

    loop.call_soon(slow_callback)
    await done


async def test_slow_async():
    await _hold_the_loop(0.2)


def test_slow_in_asyncio_run():
    asyncio.run(_hold_the_loop(0.2))


async def test_fast_async():
    await _hold_the_loop(0)
    assert asyncio.get_running_loop().get_debug()
"""


def run_inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
              conftest: str = "") -> pytest.RunResult:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "plugin")]))
    pytester.makepyfile(test_inner=INNER_TESTS)
    if conftest:
        pytester.makeconftest(conftest)
    return pytester.runpytest_subprocess("-p", "tests.slow_callbacks", "-o", "asyncio_mode=auto",
                                         "-p", "no:cacheprovider", "-rA")


def test_a_slow_callback_fails_the_test_naming_it(pytester: pytest.Pytester,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_inner(pytester, monkeypatch)
    result.assert_outcomes(passed=1, failed=2)
    out = result.stdout.str()
    assert "FAILED test_inner.py::test_slow_async" in out
    assert "FAILED test_inner.py::test_slow_in_asyncio_run" in out
    assert "PASSED test_inner.py::test_fast_async" in out
    assert "held the event loop over 0.1 s (asyncio debug mode) during call" in out
    result.stdout.re_match_lines([r".*<Handle .*slow_callback\(\).*> took 0\.[2-9]\d\d s"])


def test_report_only_lists_it_and_passes(pytester: pytest.Pytester,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    conftest = """
import pytest
from tests.slow_callbacks import report_only


@pytest.fixture(autouse=True)
def _reported_only(request):
    report_only(request)
"""
    result = run_inner(pytester, monkeypatch, conftest)
    result.assert_outcomes(passed=3)
    out = result.stdout.str()
    assert "slow callbacks over 0.1 s (reported, not failed)" in out
    result.stdout.re_match_lines([
        r"test_inner.py::test_slow_async \[call\]: <Handle .*slow_callback\(\).*> took 0\.\d+ s",
        r"test_inner.py::test_slow_in_asyncio_run \[call\]: <Handle .*> took 0\.\d+ s",
    ], consecutive=False)
    assert "test_fast_async [call]" not in out
