"""The busybox image the tests and the benchmark run: made with ``docker import`` from
Debian's busybox-static (there is no registry to pull from)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path


def import_busybox_image(name: str) -> str | None:
    """Make image ``name`` (every applet a link to /bin/busybox); the problem if it cannot."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        return "busybox-static is not installed (scripts/setup-host.sh installs it)"
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        tar_path = Path(tmp) / "rootfs.tar"
        with tarfile.open(tar_path, "w") as tar:
            tar.add(busybox, arcname="bin/busybox")
            for applet in applets:
                if applet == "busybox":
                    continue
                info = tarfile.TarInfo(f"bin/{applet}")
                info.type = tarfile.SYMTYPE
                info.linkname = "busybox"
                tar.addfile(info)
            for d in ("tmp", "proc", "sys", "dev", "etc"):
                info = tarfile.TarInfo(d)
                info.type = tarfile.DIRTYPE
                info.mode = 0o1777 if d == "tmp" else 0o755
                tar.addfile(info)
        subprocess.run(["docker", "import", "-c", "ENV PATH=/bin", str(tar_path), name],
                       check=True, capture_output=True)
    return None
