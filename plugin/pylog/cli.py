"""``pylog`` command line: ``pylog serve`` runs the plugin in the foreground."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from pathlib import Path

from aiohttp import web

from . import __version__
from .api import make_app
from .docker_api import DEFAULT_DOCKER_SOCKET, DockerAPI
from .driver import DEFAULT_FIFO_DIR, Driver

log = logging.getLogger("pylog")

DEFAULT_SOCKET = "/run/docker/plugins/pylog.sock"
DEFAULT_STATE_DIR = "/var/lib/pylog"


def _socket_in_use(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


async def serve(args: argparse.Namespace) -> int:
    sock = os.path.abspath(args.socket)
    if os.path.exists(sock):
        if _socket_in_use(sock):
            log.error("another process is already serving %s", sock)
            return 1
        os.unlink(sock)
    os.makedirs(os.path.dirname(sock), exist_ok=True)
    docker = DockerAPI(args.docker_socket) if args.docker_socket else None
    driver = Driver(Path(args.state_dir), fifo_dir=args.fifo_dir, docker=docker,
                    gc_interval=args.gc_interval)
    await driver.start()
    # handler_cancellation: when `docker logs -f` goes away dockerd closes the connection, and
    # the follower must end then (freeing its files), not when the container stops.
    runner = web.AppRunner(make_app(driver), access_log=None, handle_signals=False,
                           handler_cancellation=True)
    await runner.setup()
    old_umask = os.umask(0o177)  # the socket is root-only (0600) from the moment it exists
    try:
        await web.UnixSite(runner, sock).start()
    finally:
        os.umask(old_umask)
    log.info("pylog %s serving on %s, state in %s", __version__, sock, args.state_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await runner.cleanup()
    await driver.close()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pylog", description=__doc__)
    parser.add_argument("--version", action="version", version=f"pylog {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the log-driver plugin in the foreground")
    p.add_argument("--socket", default=DEFAULT_SOCKET,
                   help="unix socket to listen on; dockerd finds /run/docker/plugins/NAME.sock "
                        "as the log driver NAME (default %(default)s)")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                   help="where logs are stored (default %(default)s)")
    p.add_argument("--fifo-dir", default=DEFAULT_FIFO_DIR,
                   help="the only directory StartLogging FIFOs may be in (default %(default)s)")
    p.add_argument("--docker-socket", default=DEFAULT_DOCKER_SOCKET,
                   help="dockerd's API socket, asked which containers still exist so the logs of "
                        "removed ones are deleted; empty to never delete (default %(default)s)")
    p.add_argument("--gc-interval", type=float, default=300.0,
                   help="seconds between checks for removed containers (default %(default)s)")
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "info"),
                   choices=["debug", "info", "warning", "error"],
                   help="pylog's own log level (default: $LOG_LEVEL or info)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "serve":
        return asyncio.run(serve(args))
    return 2


if __name__ == "__main__":
    sys.exit(main())
