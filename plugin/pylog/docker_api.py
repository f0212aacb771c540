"""The few Docker Engine API calls pylog makes, over dockerd's unix socket.

Never called from inside StartLogging: dockerd holds the container lock while it waits for our
reply, and these calls may need that lock.
"""

from __future__ import annotations

from typing import Any

import aiohttp

DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock"


class DockerAPI:
    def __init__(self, socket_path: str = DEFAULT_DOCKER_SOCKET, timeout: float = 10.0) -> None:
        self.socket_path = socket_path
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def _get(self, path: str) -> Any:
        connector = aiohttp.UnixConnector(path=self.socket_path)
        async with aiohttp.ClientSession(connector=connector, timeout=self.timeout) as session:
            async with session.get(f"http://docker{path}") as resp:
                resp.raise_for_status()
                return await resp.json()

    async def container_ids(self) -> set[str]:
        """IDs of every container dockerd knows, running or not."""
        containers = await self._get("/containers/json?all=1")
        return {c["Id"] for c in containers}
