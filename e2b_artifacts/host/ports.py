"""The ports E2B's services listen on: free, or which process holds each."""

from __future__ import annotations

from ..findings import Finding
from .view import HostView

# client-proxy 3000 (sandbox traffic) and 3001 (health), orchestrator proxy 5007 and gRPC 5008,
# template-manager gRPC 5009.
E2B_PORTS = {3000: "client-proxy", 3001: "client-proxy health", 5007: "orchestrator proxy",
             5008: "orchestrator gRPC", 5009: "template-manager gRPC"}
E2B_BINARIES = ("orchestrator", "client-proxy", "template-manager")


def check_ports(view: HostView, ports: dict[int, str] | None = None) -> list[Finding]:
    wanted = E2B_PORTS if ports is None else ports
    listening = view.listening_tcp()
    owners = view.socket_owners() if any(p in listening for p in wanted) else {}
    findings = []
    for port, service in wanted.items():
        if port not in listening:
            findings.append(Finding("host.ports", "ok", f"port {port} ({service}) is free"))
            continue
        holders = []
        pids = []
        for address, inode in listening[port]:
            owner = owners.get(inode)
            if owner is not None:
                pids.append(owner[0])
                holders.append(f"{address}: pid {owner[0]} ({owner[1][:80]})")
            else:
                holders.append(f"{address}: socket inode {inode}, process not readable")
        fix = (f"if it is a leftover: kill {' '.join(str(p) for p in sorted(set(pids)))}" if pids
               else f"find the holder as root: ss -ltnp 'sport = :{port}'")
        own = [cmd for pid, cmd in (owners.get(inode, (0, "")) for _a, inode in listening[port])
               if any(name in cmd for name in E2B_BINARIES)]
        if own:
            findings.append(Finding("host.ports", "warn", f"port {port} ({service}) is held by an E2B service "
                                                          f"({'; '.join(holders)}): fine if that is the one meant "
                                                          "to run; an old one makes a new one fail with bind: "
                                                          "address already in use", fix))
            continue
        findings.append(Finding("host.ports", "FAIL", f"port {port} ({service}) is in use ({'; '.join(holders)}): "
                                                      "bind: address already in use", fix))
    return findings
