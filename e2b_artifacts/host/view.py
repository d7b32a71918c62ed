"""Everything ``host check`` reads about a host, through one object.

Files are read under a configurable root (``/`` for this machine, a prepared directory in tests),
the process table and sockets from ``<root>/proc``, the Nomad client's configuration from
``<root>/etc/nomad.d`` (and, on the real root, from the agent API on loopback when one answers).
Commands (``getcap``, ``firecracker --version``) run only on files found under the root.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from ..settings import Settings

NOMAD_API = "http://127.0.0.1:4646"


@dataclass
class HostView:
    root: Path = Path("/")
    settings: Settings = field(default_factory=Settings)
    user: str = "root"  # the user the orchestrator runs as
    probe_kernel: Path | None = None  # a guest kernel for the KVM probe (host path)
    nomad_api: str | None = NOMAD_API  # the agent asked when no client config file is found; None: none

    @property
    def is_real(self) -> bool:
        """The root is this machine's own ``/``: live probes (KVM boot, syscalls, the agent API) are allowed."""
        return self.root.resolve() == Path("/")

    def path(self, host_path: str | Path) -> Path:
        """Where ``host_path`` (absolute, as the host sees it) is under the root."""
        text = str(host_path)
        return self.root / text.lstrip("/") if text.startswith("/") else self.root / text

    def read(self, host_path: str | Path) -> str | None:
        try:
            return self.path(host_path).read_text(errors="replace")
        except OSError:
            return None

    def arch(self) -> str:
        return platform.machine()

    def kernel_release(self) -> str | None:
        text = self.read("/proc/sys/kernel/osrelease")
        return text.strip() if text else None

    def meminfo(self) -> dict[str, int]:
        values: dict[str, int] = {}
        for line in (self.read("/proc/meminfo") or "").splitlines():
            key, _, rest = line.partition(":")
            words = rest.split()
            if words and words[0].isdigit():
                values[key.strip()] = int(words[0])
        return values

    def passwd_uid(self, user: str) -> int | None:
        """The uid of ``user`` from ``<root>/etc/passwd`` (a number passes through)."""
        if user.isdigit():
            return int(user)
        for line in (self.read("/etc/passwd") or "").splitlines():
            fields = line.split(":")
            if len(fields) > 3 and fields[0] == user and fields[2].isdigit():
                return int(fields[2])
        return 0 if user == "root" else None

    # ------------------------------------------------------------------ processes and sockets

    def listening_tcp(self) -> dict[int, list[tuple[str, int]]]:
        """Listening TCP ports from /proc/net/tcp{,6}: port -> [(address, socket inode)]."""
        found: dict[int, list[tuple[str, int]]] = {}
        for name in ("tcp", "tcp6"):
            for line in (self.read(f"/proc/net/{name}") or "").splitlines()[1:]:
                cols = line.split()
                if len(cols) < 10 or cols[3] != "0A":  # 0A = TCP_LISTEN
                    continue
                addr_hex, _, port_hex = cols[1].partition(":")
                found.setdefault(int(port_hex, 16), []).append((_address(addr_hex), int(cols[9])))
        return found

    def socket_owners(self) -> dict[int, tuple[int, str]]:
        """Socket inode -> (pid, command line), from the ``socket:[N]`` links in /proc/<pid>/fd."""
        owners: dict[int, tuple[int, str]] = {}
        proc = self.path("/proc")
        with contextlib.suppress(OSError):
            pids = [p for p in os.listdir(proc) if p.isdigit()]
            for pid in pids:
                try:
                    fds = os.listdir(proc / pid / "fd")
                except OSError:
                    continue
                for fd in fds:
                    try:
                        target = os.readlink(proc / pid / "fd" / fd)
                    except OSError:
                        continue
                    if target.startswith("socket:["):
                        owners[int(target[8:-1])] = (int(pid), self._cmdline(proc / pid))
        return owners

    @staticmethod
    def _cmdline(pid_dir: Path) -> str:
        try:
            raw = (pid_dir / "cmdline").read_bytes()
        except OSError:
            return "?"
        words = (p.decode(errors="replace") for p in raw.split(b"\0") if p)
        return " ".join(" ".join(w.split()) for w in words) or "?"

    # ------------------------------------------------------------------ Nomad

    def nomad_client_pools(self) -> list[tuple[str, str]]:
        """The local Nomad client's node pool(s): (where it was read, pool)."""
        from .jobs import parse_hcl, unquote

        pools: list[tuple[str, str]] = []
        conf = self.path("/etc/nomad.d")
        files = sorted(conf.glob("*.hcl")) if conf.is_dir() else []
        for file in files:
            with contextlib.suppress(Exception):
                for client in parse_hcl(file.read_text()).get("client", []):
                    if client.get("enabled") in (True, "true") or "enabled" not in client:
                        pools.append((str(Path("/etc/nomad.d") / file.name),
                                      unquote(client.get("node_pool", "default"))))
        if not pools and self.nomad_api:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                with urllib.request.urlopen(f"{self.nomad_api}/v1/agent/self", timeout=1) as resp:
                    agent = json.loads(resp.read())
                client_conf = agent["config"]["Client"]
                if client_conf.get("Enabled"):
                    pools.append((f"{self.nomad_api}/v1/agent/self", str(client_conf.get("NodePool") or "default")))
        return pools

    # ------------------------------------------------------------------ commands

    def run(self, argv: list[str], timeout: float = 10.0) -> tuple[int, str]:
        """Run a command; (exit code, stdout+stderr). 127 when it cannot start."""
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                                  errors="replace")
        except (OSError, subprocess.TimeoutExpired) as exc:
            return 127, str(exc)
        return done.returncode, (done.stdout + done.stderr).strip()


def _address(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return ".".join(str(b) for b in reversed(raw))
    words = [raw[i:i + 4][::-1] for i in range(0, 16, 4)]  # each 32-bit word is host (little) endian
    import ipaddress

    return str(ipaddress.IPv6Address(b"".join(words)))
