#!/usr/bin/env python3
"""Write fixtures/sample-rootfs.tar: a tiny, deterministic root filesystem for the demo.

It holds what a guest needs around envd (/proc, /sys, /dev with console and null,
/tmp, /etc basics, a user home owned by uid 1000). No binaries: envd is injected.
"""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

MTIME = 1_700_000_000
FILES = {
    "etc/os-release": 'NAME="e2b-artifact sample"\nID=e2b-sample\nVERSION_ID=1\n',
    "etc/hostname": "e2b.local\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\te2b.local\n",
    "etc/resolv.conf": "nameserver 8.8.8.8\n",
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
    "etc/group": "root:x:0:\nuser:x:1000:\n",
    "home/user/README": "Sample template built by e2b-artifact.\n",
}
DIRS = {"etc": 0o755, "proc": 0o555, "sys": 0o555, "dev": 0o755, "tmp": 0o1777, "root": 0o700,
        "home": 0o755, "home/user": 0o755, "usr": 0o755, "usr/bin": 0o755, "sbin": 0o755, "run": 0o755}


def entry(name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, MTIME
    info.uname = info.gname = ""
    return info


def main(out: Path) -> None:
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, mode in DIRS.items():
            owner = 1000 if name == "home/user" else 0
            tar.addfile(entry(name, tarfile.DIRTYPE, mode, owner, owner))
        for name, text in FILES.items():
            owner = 1000 if name.startswith("home/user/") else 0
            info = entry(name, tarfile.REGTYPE, 0o644, owner, owner)
            data = text.encode()
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, major, minor, mode in (("dev/console", 5, 1, 0o600), ("dev/null", 1, 3, 0o666)):
            info = entry(name, tarfile.CHRTYPE, mode)
            info.devmajor, info.devminor = major, minor
            tar.addfile(info)
    tmp.replace(out)
    print(out)


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent / "fixtures/sample-rootfs.tar"
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else default)
