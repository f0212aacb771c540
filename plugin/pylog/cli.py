"""``pylog`` command line: ``pylog serve`` runs the plugin in the foreground.

``pylog serve`` logs to stderr (where ``docker plugin`` collects a managed plugin's output) one
JSON object per line: ``time``, ``level``, ``logger``, ``msg``, and fields such as ``event`` and
``sink`` where a message has them. Nothing is logged per log line at ``info``: containers
attaching and detaching, sinks going down and coming back (once each), and problems.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import faulthandler
import gc
import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from . import __version__
from .api import make_app
from .docker_api import DEFAULT_DOCKER_SOCKET, DockerAPI
from .driver import DEFAULT_FIFO_DIR, Driver
from .looplag import watch_loop
from .malloc import keep_freed_memory
from .metrics import READY_MAX_FAILING, OpsState, parse_address, start_metrics
from .workers import warm_executor

log = logging.getLogger("pylog")

LOG_LEVELS = ("debug", "info", "warning", "error")
# LogRecord attributes that are not extra fields of a message.
_RECORD_KEYS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ms), level, logger, msg, then any ``extra=``
    fields (``event``, ``sink``...), then ``exc`` for an exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_KEYS and not key.startswith("_"):
                out[key] = value if isinstance(value, (str, int, float, bool)) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str, structured: bool) -> None:
    """Configure pylog's own log on stderr; an unknown level falls back to info (and says so)."""
    name = level.strip().lower()
    name = {"warn": "warning", "err": "error"}.get(name, name)
    unknown = name not in LOG_LEVELS
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if structured else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel("INFO" if unknown else name.upper())
    if unknown:
        log.warning("unknown log level %r (LOG_LEVEL or --log-level); using info: one of %s",
                    level, ", ".join(LOG_LEVELS))

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
    keep_freed_memory()
    # `kill -USR1 <pid>` writes every thread's stack to stderr (the plugin's log), for a
    # pylog that seems stuck; it does not stop anything.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    warm_executor(asyncio.get_running_loop())
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
    ops = OpsState()
    metrics_runner: web.AppRunner | None = None
    if args.metrics_address:
        try:
            parse_address(args.metrics_address)
        except ValueError as e:
            log.error("%s", e)
            return 2
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
    ops.serving = True
    # What the modules and the start made lives as long as pylog: out of the collector's
    # sight, a full collection does not walk it on the loop (65,000 objects, 22 ms a walk).
    gc.freeze()
    log.info("pylog %s serving on %s, state in %s", __version__, sock, args.state_dir,
             extra={"event": "serving"})
    if args.metrics_address:
        try:
            metrics_runner = await start_metrics(driver, args.metrics_address, ops,
                                                 max_failing=args.ready_max_failing)
        except OSError as e:
            # The plugin itself works: dockerd must not lose its log driver over the metrics.
            log.error("cannot serve metrics on %s: %s; going on without them",
                      args.metrics_address, e, extra={"event": "metrics_failed"})
    watcher = asyncio.create_task(watch_loop(driver.loop_lag), name="pylog-loop-lag")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGCONT, driver.loop_lag.on_sigcont)
    await stop.wait()
    log.info("shutting down", extra={"event": "shutdown"})
    watcher.cancel()
    ops.serving = False
    await runner.cleanup()
    await driver.close()
    if metrics_runner is not None:
        await metrics_runner.cleanup()
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock)
    return 0


# ---------------------------------------------------------------------------------------------
# Client commands: talk to the running plugin over its socket.

NS_COLUMNS = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


async def _get(sock: str, path: str) -> Any:
    async with aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=sock)) as session:
        async with session.get(f"http://pylog{path}") as resp:
            body = await resp.json(content_type=None)
            if resp.status != 200:
                raise SystemExit(f"pylog: {body.get('Err', resp.reason)}")
            return body


def _ns_label(ns: dict[str, Any] | None) -> str:
    if ns is None:
        return "-"
    if ns.get("is_host"):
        return "host"
    return f"{ns['inode']}{'*' if ns.get('shared_with') else ''}"  # host ones return above


def format_ps(containers: list[dict[str, Any]]) -> str:
    """A table a person reads at a glance, then who shares what and who is in the host's."""
    rows = [["CONTAINER", "NAME", "PID", *NS_COLUMNS]]
    shared: dict[tuple[str, str, str], list[str]] = {}  # (type, key, inode) -> names
    in_host: list[str] = []
    for c in containers:
        ns = c.get("pylog", {}).get("ns")
        name = c["container"]["name"]
        rows.append([c["container"]["id"][:12], name, str(c.get("process", {}).get("pid", "-")),
                     *(_ns_label(ns.get(t)) if ns else "?" for t in NS_COLUMNS)])
        for t, v in (ns or {}).items():
            if v.get("shared_with") and not v.get("is_host"):
                # grouped by key: an inode alone can name two namespaces over time
                shared.setdefault((t, v.get("key", ""), str(v["inode"])), []).append(name)
        host_types = [t for t in ("ipc", "mnt", "net", "pid", "uts") if (ns or {}).get(t, {}).get("is_host")]
        if host_types:
            in_host.append(f"{name}: {', '.join(host_types)}")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    if shared:
        lines += ["", "Sharing a namespace (* above):"]
        lines += [f"  {t} {inode}{f' (key {key})' if key else ''}: {', '.join(sorted(names))}"
                  for (t, key, inode), names in sorted(shared.items())]
    if in_host:
        lines += ["", "In the host's namespaces (besides cgroup, time, user):"]
        lines += [f"  {entry}" for entry in in_host]
    if len(rows) == 1:
        lines.append("(no container is attached)")
    lines += ["", "Namespace columns: the namespace inode (as ls -l /proc/PID/ns shows); "
              "host = the host's; ? = not found yet; * = shared (grouped below by key)."]
    return "\n".join(lines)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def format_sinks(sinks: list[dict[str, Any]]) -> str:
    """The sinks in use: state (up, retrying, spooling), bytes behind, last error."""
    if not sinks:
        return "Sinks: none in use."
    rows = [["SINK", "TARGET", "STATE", "SPOOL", "LAG", "CONTAINERS", "LAST ERROR"]]
    for s in sinks:
        state = s["state"]
        if s.get("failing_seconds"):
            state += f" {s['failing_seconds']:.0f}s"
        rows.append([s["sink"], s["target"], state, _size(s["spool_bytes"]),
                     f"{s['lag_seconds']:.1f}s", str(s["containers"]),
                     s["last_error"] or "-"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join([*(cell.ljust(w) for cell, w in zip(r, widths)), r[-1]]).rstrip()
             for r in rows]
    note = ("STATE: up; retrying (for how long); spooling = up but more than one batch (1 MiB) "
            "behind. SPOOL: stored bytes not yet delivered.")
    return "\n".join(["Sinks:", *lines, "", note])


async def ps(args: argparse.Namespace) -> int:
    body = await _get(args.socket, "/pylog/v1/containers")
    if args.json:
        print(json.dumps(body["Containers"], indent=2))
        return 0
    print(format_ps(body["Containers"]))
    try:
        sinks = await _get(args.socket, "/pylog/v1/sinks")
    except SystemExit:  # an older pylog serve without the route
        return 0
    print()
    print(format_sinks(sinks["Sinks"]))
    return 0


async def inspect(args: argparse.Namespace) -> int:
    print(json.dumps(await _get(args.socket, f"/pylog/v1/containers/{args.container}"), indent=2))
    return 0


async def tail(args: argparse.Namespace) -> int:
    query = f"?tail={args.lines}&follow={'1' if args.follow else '0'}"
    connector = aiohttp.UnixConnector(path=args.socket)
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.get(f"http://pylog/pylog/v1/containers/{args.container}/records"
                               f"{query}") as resp:
            if resp.status != 200:
                body = await resp.json(content_type=None)
                raise SystemExit(f"pylog: {body.get('Err', resp.reason)}")
            async for line in resp.content:
                sys.stdout.write(line.decode())
                sys.stdout.flush()
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
    p.add_argument("--log-level", default=os.environ.get("LOG_LEVEL") or "info",
                   help="pylog's own log level: debug, info, warning or error "
                        "(default: $LOG_LEVEL or info)")
    p.add_argument("--metrics-address", default=os.environ.get("METRICS_ADDRESS", ""),
                   help="HOST:PORT for Prometheus /metrics, /healthz, /readyz and the namespace "
                        "map at /; empty: off (default: $METRICS_ADDRESS or off)")
    p.add_argument("--ready-max-failing", type=float, default=READY_MAX_FAILING,
                   help="/readyz answers 503 once a sink has been failing this many seconds "
                        "(default %(default)s)")
    for name, helptext in (("ps", "list attached containers with their namespaces"),
                           ("inspect", "print one container's context as JSON"),
                           ("tail", "print a container's records (JSON lines)")):
        c = sub.add_parser(name, help=helptext)
        c.add_argument("--socket", default=DEFAULT_SOCKET,
                       help="the running plugin's socket (default %(default)s)")
        if name == "ps":
            c.add_argument("--json", action="store_true", help="print JSON instead of a table")
        else:
            c.add_argument("container", help="container name, ID or unique ID prefix")
        if name == "tail":
            c.add_argument("-f", "--follow", action="store_true",
                           help="keep printing new records until the container stops")
            c.add_argument("-n", "--lines", type=int, default=-1,
                           help="only the last N entries (default: all)")
    # `docker plugin set pylog args=` passes one empty argument: it means "no extra flags".
    args = parser.parse_args([a for a in (sys.argv[1:] if argv is None else argv) if a != ""])
    setup_logging(getattr(args, "log_level", "warning"), structured=args.command == "serve")
    commands = {"serve": serve, "ps": ps, "inspect": inspect, "tail": tail}
    try:
        return asyncio.run(commands[args.command](args))
    except (aiohttp.ClientConnectionError, FileNotFoundError) as e:
        if args.command == "serve":
            raise
        print(f"pylog: cannot reach the plugin at {args.socket}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
