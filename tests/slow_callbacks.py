"""A pytest plugin: every event loop the tests make runs in asyncio's debug mode, and a callback
that holds its loop longer than ``SLOW_CALLBACK`` seconds fails the test phase it ran in,
naming the callback and how long it took.

Tests under a directory whose conftest marks them report-only (:func:`report_only`, the e2e
tests: a loaded 2-core machine can delay any callback there) are not failed; their slow
callbacks are listed in the terminal summary instead.

tests/conftest.py registers it; ``pytest -p tests.slow_callbacks`` loads it on its own.
"""

from __future__ import annotations

import asyncio
import gc
import linecache
import logging
import os
import sys
from collections.abc import Generator
from dataclasses import dataclass

import pytest

from pylog.workers import warm_executor

# seconds; the VM lanes (emulated, about ten times slower) set PYLOG_SLOW_CALLBACK=1.0
SLOW_CALLBACK = float(os.environ.get("PYLOG_SLOW_CALLBACK", "0.1"))
_SLOW_MSG = "Executing %s took %.3f seconds"  # asyncio/base_events.py, _run_once
_REPORT_ONLY = pytest.StashKey[bool]()


def report_only(request: pytest.FixtureRequest) -> None:
    """Slow callbacks of this test are listed in the summary, not failed (call from a fixture)."""
    request.node.stash[_REPORT_ONLY] = True


@dataclass(frozen=True)
class Slow:
    callback: str
    seconds: float

    def __str__(self) -> str:
        # A debug-mode repr carries every "created at" on the way; its head names the callback.
        head = self.callback if len(self.callback) <= 300 else self.callback[:300] + " ..."
        return f"{head} took {self.seconds:.3f} s"


def _no_check(filename: str | None = None) -> None:
    pass


class _DebugLoopPolicy(asyncio.DefaultEventLoopPolicy):
    """Loops made outside pytest-asyncio (``asyncio.run`` in a plain test) are debugged too."""

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = super().new_event_loop()
        warm_executor(loop)  # as pylog serve does: no thread is started while a step runs
        loop.set_debug(True)
        loop.slow_callback_duration = SLOW_CALLBACK
        return loop


class _Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[Slow] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == _SLOW_MSG and isinstance(record.args, tuple) and len(record.args) == 2:
            callback = str(record.args[0])
            # asyncio.run's own last step starts a thread to join the executor's: starting a
            # thread waits for the GIL, which the threads being joined hold (a test making a
            # loop per hypothesis example saw 0.1 s). No test's or pylog's code runs in it.
            if "coro=<BaseEventLoop.shutdown_default_executor()" in callback:
                return
            self.seen.append(Slow(callback, float(record.args[1])))


class SlowCallbacks:
    def __init__(self, config: pytest.Config) -> None:
        self.recorder = _Recorder()
        self.reported: list[tuple[str, str, Slow]] = []  # (test, phase, callback), not failed
        self._module = ""
        self._sources_read: set[str] = set()
        # pytest-asyncio (1.2 and later) makes its loops with debug set from this option.
        config.option.asyncio_debug = True
        # Debug mode records where each future and handle was made, and that stats every file
        # of the stack (linecache.checkcache); a stat gives up the GIL, and with a worker busy
        # each takes up to the switch interval to get it back: a step making a few futures
        # then "took" 0.7 s of waits that are the debug mode's own. The files do not change.
        self._old_checkcache = linecache.checkcache
        linecache.checkcache = _no_check
        self._old_policy = asyncio.get_event_loop_policy()
        asyncio.set_event_loop_policy(_DebugLoopPolicy())
        logging.getLogger("asyncio").addHandler(self.recorder)

    def unconfigure(self) -> None:
        logging.getLogger("asyncio").removeHandler(self.recorder)
        linecache.checkcache = self._old_checkcache
        asyncio.set_event_loop_policy(self._old_policy)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item,
                                  call: pytest.CallInfo[None]) -> Generator[None, pytest.TestReport,
                                                                            pytest.TestReport]:
        report = yield
        slow, self.recorder.seen = self.recorder.seen, []
        if not slow:
            return report
        if item.stash.get(_REPORT_ONLY, False):
            self.reported += [(item.nodeid, call.when, s) for s in slow]
            return report
        text = "\n".join(f"  {s}" for s in slow)
        report.sections.append((f"slow callbacks ({call.when})", text))
        if report.passed:
            report.outcome = "failed"
            report.longrepr = (f"{len(slow)} callback(s) held the event loop over "
                               f"{SLOW_CALLBACK} s (asyncio debug mode) during {call.when}:\n"
                               f"{text}")
        return report

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        # Those between tests (a loop of a session fixture, a thread's own loop) are no test's.
        self.reported += [("(between tests)", "-", s) for s in self.recorder.seen]
        self.recorder.seen = []
        self._freeze_heap(item.nodeid.split("::")[0])
        self._read_sources()

    def _read_sources(self) -> None:
        """In debug mode each future made records its stack with its source lines (the C
        Future calls traceback.extract_stack), and the first line of a file reads the whole
        file: 38 ms in one step here. The modules' files are read before the test instead."""
        for name, module in list(sys.modules.items()):
            if name not in self._sources_read:
                self._sources_read.add(name)
                path = getattr(module, "__file__", None)
                if path and path.endswith(".py"):
                    linecache.getlines(path)

    def _freeze_heap(self, module: str) -> None:
        """The test process's heap (pytest, hypothesis, the modules, what earlier tests left)
        is set aside from the garbage collector: a full collection of it took 70-100 ms here,
        inside whichever step of a test's loop happened to trigger it, and failed that test.
        What the test itself makes is still collected; the rest once per module."""
        if module != self._module:
            self._module = module
            gc.unfreeze()
            gc.collect()
        gc.freeze()

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        self.reported += [("(after the last test)", "-", s) for s in self.recorder.seen]
        if not self.reported:
            return
        terminalreporter.section(f"slow callbacks over {SLOW_CALLBACK} s (reported, not failed)")
        for test, phase, slow in self.reported:
            terminalreporter.write_line(f"{test} [{phase}]: {slow}")


_KEY = "slow-callbacks"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(_KEY):
        config.pluginmanager.register(SlowCallbacks(config), _KEY)


def pytest_unconfigure(config: pytest.Config) -> None:
    plugin = config.pluginmanager.get_plugin(_KEY)
    if isinstance(plugin, SlowCallbacks):
        plugin.unconfigure()
