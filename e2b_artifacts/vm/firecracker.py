"""Firecracker's API over its unix socket: the requests of a cold boot, and the client that sends them."""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..versions import parse_firecracker_version
from .console import VmmError

# Firecracker emulates the i8042 reset (reboot=k) and adds root=/dev/vda rw itself.
EXTRA_KERNEL_ARGS = "reboot=k"
FIRST_ACPI = (1, 8)  # Firecracker describes its devices in ACPI from 1.8 (CHANGELOG 1.8.0)
SOCKET_WAIT_S = 10.0


def offers_acpi(firecracker_version: str | None) -> bool:
    """Does this Firecracker release give the guest ACPI tables (else only ``virtio_mmio.device=``)?"""
    parsed = parse_firecracker_version(firecracker_version)
    return parsed is not None and parsed >= FIRST_ACPI


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: Path, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(str(self._socket_path))
        self.sock = sock


def firecracker_put(socket_path: Path, path: str, body: dict[str, Any], timeout: float = 10.0) -> None:
    """One ``PUT`` to Firecracker's API; a non-2xx answer raises with its ``fault_message``."""
    conn = _UnixHTTPConnection(socket_path, timeout)
    try:
        conn.request("PUT", path, body=json.dumps(body),
                     headers={"Content-Type": "application/json", "Accept": "application/json"})
        response = conn.getresponse()
        data = response.read()
    except OSError as exc:
        raise VmmError(f"Firecracker API PUT {path} failed: {exc}") from exc
    finally:
        conn.close()
    if response.status >= 300:
        try:
            fault = json.loads(data).get("fault_message", data.decode(errors="replace"))
        except ValueError:
            fault = data.decode(errors="replace")
        raise VmmError(f"Firecracker API PUT {path} answered {response.status}: {fault}")


def firecracker_requests(kernel: Path, disk: Path, kernel_args: str, vcpus: int,
                         mem_mib: int) -> list[tuple[str, dict[str, Any]]]:
    """The API calls of a cold boot, in order (bodies valid from Firecracker 0.2x to 1.1x)."""
    return [
        ("/boot-source", {"kernel_image_path": str(kernel), "boot_args": kernel_args}),
        ("/drives/rootfs", {"drive_id": "rootfs", "path_on_host": str(disk), "is_root_device": True,
                            "is_read_only": False}),
        ("/machine-config", {"vcpu_count": vcpus, "mem_size_mib": mem_mib}),
        ("/actions", {"action_type": "InstanceStart"}),
    ]


def argv(binary: Path, sock: Path) -> list[str]:
    return [str(binary), "--api-sock", str(sock)]


def configure(sock: Path, kernel: Path, disk: Path, kernel_args: str, *, vcpus: int,
              mem_mib: int) -> Callable[[], None]:
    """What to do once Firecracker runs: wait for its API socket, then send the cold-boot requests."""
    def send() -> None:
        deadline = time.monotonic() + SOCKET_WAIT_S
        while not sock.exists():
            if time.monotonic() > deadline:
                raise VmmError(f"Firecracker did not create its API socket {sock} within {SOCKET_WAIT_S:g} s")
            time.sleep(0.02)
        for path, body in firecracker_requests(kernel.resolve(), disk, kernel_args, vcpus, mem_mib):
            firecracker_put(sock, path, body)
    return send
