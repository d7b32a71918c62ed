"""A stand-in for the firecracker binary: its API socket, not a VMM.

It serves ``PUT`` requests on ``--api-sock`` the way Firecracker's API does (204 on
success, 400 with ``fault_message`` on a bad body), records every request to
``$FC_STANDIN_RECORD`` (JSON lines), and on ``InstanceStart`` prints console lines
like a booting guest, then stays alive. ``$FC_STANDIN_FAULT=/path`` makes that
path answer 400 with a Firecracker-style fault; ``$FC_STANDIN_SILENT=1`` prints nothing
(a guest that hangs). It lets the tests drive
e2b-artifact's Firecracker driver on a host where Firecracker cannot run.
"""

from __future__ import annotations

import json
import os
import socketserver
import sys
import time
from http.server import BaseHTTPRequestHandler

REQUIRED = {
    "/boot-source": {"kernel_image_path"},
    "/drives/rootfs": {"drive_id", "path_on_host", "is_root_device", "is_read_only"},
    "/machine-config": {"vcpu_count", "mem_size_mib"},
    "/actions": {"action_type"},
}


class Handler(BaseHTTPRequestHandler):
    def do_PUT(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with open(os.environ["FC_STANDIN_RECORD"], "a") as fh:
            fh.write(json.dumps({"path": self.path, "body": body}) + "\n")
        missing = REQUIRED.get(self.path, set()) - set(body)
        if self.path == os.environ.get("FC_STANDIN_FAULT"):
            return self._fault("Kernel Loader: failed to load ELF kernel image")
        if missing:
            return self._fault(f"missing fields {sorted(missing)}")
        if not os.path.exists(body.get("path_on_host", body.get("kernel_image_path", "/"))):
            return self._fault("No such file or directory")
        self.send_response(204)
        self.end_headers()
        if body.get("action_type") == "InstanceStart" and not os.environ.get("FC_STANDIN_SILENT"):
            sys.stdout.write(f"[    0.000000] Command line: {self.server.boot_args}\n")  # type: ignore[attr-defined]
            sys.stdout.write("[    0.500000] Run /sbin/init as init process\ne2b-envd-standin: started\n")
            sys.stdout.flush()
        elif self.path == "/boot-source":
            self.server.boot_args = body.get("boot_args", "")  # type: ignore[attr-defined]

    def _fault(self, message: str) -> None:
        data = json.dumps({"fault_message": message}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    sock = sys.argv[sys.argv.index("--api-sock") + 1]
    server = socketserver.UnixStreamServer(sock, Handler)
    server.serve_forever()


if __name__ == "__main__":
    time.sleep(0.05)  # the socket appears a moment after start, as with the real binary
    main()
