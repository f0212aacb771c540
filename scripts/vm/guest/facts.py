"""In-guest: what README's "tested on" table says of this machine, and the e2e run's counts.
Usage: python3 facts.py [JUNIT_XML] > facts.json (the guest's own Python, standard library only)."""

import fcntl
import json
import os
import platform
import subprocess
import sys
import xml.etree.ElementTree as ET

NS_GET_ID = 0x8008B70D


def docker(fmt: str, *what: str) -> str:
    return subprocess.run(["docker", *what, "--format", fmt], capture_output=True, text=True,
                          check=True).stdout.strip()


def os_release() -> str:
    fields = dict(line.split("=", 1) for line in open("/etc/os-release").read().splitlines()
                  if "=" in line)
    return fields.get("PRETTY_NAME", "?").strip('"')


def has_ns_get_id() -> bool:
    fd = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        fcntl.ioctl(fd, NS_GET_ID, b"\0" * 8)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def e2e(junit: str) -> dict:
    try:
        suite = ET.parse(junit).getroot()
    except (OSError, ET.ParseError):
        return {}
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    counts["seconds"] = round(float(suite.get("time", 0)))
    return counts


cgroup_version, cgroup_driver = docker("{{.CgroupVersion}} {{.CgroupDriver}}", "info").split()
facts = {
    "distribution": os_release(),
    "debian_version": open("/etc/debian_version").read().strip(),
    "kernel": platform.release(),
    "cgroup": f"v{cgroup_version} ({cgroup_driver})",
    "init": open("/proc/1/comm").read().strip(),
    "docker": docker("{{.Server.Version}}", "version"),
    "python": platform.python_version(),
    "ns_get_id": has_ns_get_id(),
    "e2e": e2e(sys.argv[1]) if len(sys.argv) > 1 else {},
}
print(json.dumps(facts, indent=2))
