"""/run/netns: where the orchestrator creates each sandbox's network namespace."""

from __future__ import annotations

import os
import stat

from ..findings import Finding
from .view import HostView

NETNS = "/run/netns"


def check_netns(view: HostView) -> list[Finding]:
    path = view.path(NETNS)
    uid = view.passwd_uid(view.user)
    if not path.exists():
        return [Finding("host.netns", "warn", f"{NETNS} does not exist (ip netns add creates it; the orchestrator "
                                              "needs to be allowed to)", f"mkdir -p {NETNS}")]
    if not path.is_dir():
        return [Finding("host.netns", "FAIL", f"{NETNS} is not a directory", f"move it aside; mkdir -p {NETNS}")]
    st = path.stat()
    if uid is None:
        return [Finding("host.netns", "warn", f"{NETNS} exists; user {view.user} is unknown here, access not checked",
                        "pass --user with the orchestrator's user")]
    writable = (uid == 0 or (st.st_uid == uid and st.st_mode & stat.S_IWUSR) or st.st_mode & stat.S_IWOTH)
    if uid == 0 and view.is_real:
        writable = os.access(path, os.W_OK)  # a read-only mount refuses root too
    if not writable:
        return [Finding("host.netns", "FAIL", f"{NETNS} (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}) "
                                              f"is not writable by {view.user} (uid {uid}): open /run/netns/ns-N: "
                                              "permission denied",
                        "run the orchestrator and template-manager as root (Nomad raw_exec without user), "
                        "with cap_sys_admin")]
    return [Finding("host.netns", "ok", f"{NETNS} exists and {view.user} can create namespaces there")]
