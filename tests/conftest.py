"""Test-wide settings: hypothesis profiles (a bounded run by default, a long one on request),
asyncio's debug mode with slow callbacks failing the test (tests/slow_callbacks.py), and the
fixtures several test modules share."""

import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings

from pylog.api import make_app
from pylog.driver import Driver
from pylog.store import Store
from tests import slow_callbacks

settings.register_profile("ci", max_examples=300, deadline=None)
# The longer fuzz run: HYPOTHESIS_PROFILE=long bash scripts/test.sh tests/test_fuzz.py
settings.register_profile("long", max_examples=50_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config: pytest.Config) -> None:
    slow_callbacks.pytest_configure(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    slow_callbacks.pytest_unconfigure(config)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Unit tests first: their 0.1 s slow-callback limit is judged on a machine that is not
    still busy with what the end-to-end tests left behind (dockerd removing containers, a
    plugin finishing a walk). The long fuzz run takes as long as it takes: no 10-minute limit
    (pyproject.toml) on it."""
    items.sort(key=lambda item: "e2e" in item.nodeid.split("::")[0].split("/"))
    if os.environ.get("HYPOTHESIS_PROFILE") == "long":
        for item in items:
            item.add_marker(pytest.mark.timeout(0))


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    """The store's compression worker, for the store tests."""
    ex = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-compress")
    yield ex
    ex.shutdown(wait=True)


@pytest.fixture
def store(tmp_path: Path, executor: ThreadPoolExecutor) -> Iterator[Store]:
    s = Store(tmp_path, executor)
    yield s
    s.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[tuple[TestClient, Driver, Path]]:
    """The plugin's API on a test server (the API and metrics tests): the client, the driver
    and the directory the tests make FIFOs in."""
    fifo_dir = tmp_path / "logging"
    fifo_dir.mkdir()
    driver = Driver(tmp_path / "state", fifo_dir=str(fifo_dir))
    client = TestClient(TestServer(make_app(driver)))
    await client.start_server()
    yield client, driver, fifo_dir
    await client.close()
    await driver.close()
