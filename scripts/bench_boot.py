#!/usr/bin/env python3
"""Benchmark `e2b-artifact boot` on the sample template: command start to the envd marker.

Builds the sample template (fixtures/sample-rootfs.tar + the envd stand-in), then
alternates, for --runs rounds:

* tool:      `e2b-artifact boot <build> --expect <marker> --json`, wall time from command
             start until it exits with its verdict (VMM killed, overlay removed); the JSON
             also gives the VMM-start-to-marker time;
* bare-qemu: the baseline, QEMU started directly with the same kernel, arguments and
             accelerator (disk as `snapshot=on`), timed from process start to the marker.

Prints medians and the ratio tool / bare-qemu. Accelerator: whatever `boot` picks
(TCG on hosts where KVM does not run guests, KVM where it works).

Usage: scripts/bench_boot.py [--runs N] [--kernel VMLINUX]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MARKER = b"e2b-envd-standin: started"
FC_VERSION = "v1.12.1_d990331"


def cli(*args: str | Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "e2b_artifacts", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, check=False)


def default_kernel() -> Path:
    sys.path.insert(0, str(REPO))
    from tests import kernels  # the cached test kernels (scripts/build-test-kernels.sh)

    return Path(kernels.test_kernel("cmdline-ikconfig").vmlinux)


def bare_qemu(kernel: Path, rootfs: Path, accel: str, kernel_args: str, timeout: float = 120) -> float:
    argv = ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-accel", accel, *(["-cpu", "host"] if accel == "kvm"
            else []), "-m", "256", "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-serial", "stdio", "-kernel", str(kernel), "-append", kernel_args,
            "-drive", f"id=rootfs,file={rootfs},format=raw,if=none,snapshot=on",
            "-device", "virtio-blk-device,drive=rootfs"]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    assert proc.stdout is not None
    seen = b""
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() - start < timeout:
                if sel.select(timeout=0.1):
                    chunk = os.read(proc.stdout.fileno(), 1 << 16)
                    if not chunk:
                        break
                    seen = (seen + chunk)[-4096:]
                    if MARKER in seen:
                        return time.monotonic() - start
        raise SystemExit(f"bare QEMU never printed the marker; last output: {seen[-500:]!r}")
    finally:
        os.killpg(proc.pid, 9)
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kernel", type=Path, help="vmlinux to boot [default: the cached cmdline test kernel]")
    args = parser.parse_args()
    kernel = (args.kernel or default_kernel()).resolve()

    with tempfile.TemporaryDirectory(prefix="bench-boot-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "kernels" / "bench").mkdir(parents=True)
        os.symlink(kernel, tmp / "kernels" / "bench" / "vmlinux.bin")
        env = {**os.environ, "E2B_ARTIFACT_CACHE": str(tmp / "cache"),
               "LOCAL_TEMPLATE_STORAGE_BASE_PATH": str(tmp / "templates"),
               "HOST_KERNELS_DIR": str(tmp / "kernels"), "FIRECRACKER_VERSIONS_DIR": str(tmp / "fc-versions")}
        built = cli("build", "--rootfs-tar", REPO / "fixtures/sample-rootfs.tar",
                    "--envd", REPO / "fixtures/envd-standin/envd", "--build-id", "sample", "--kernel-version", "bench",
                    "--firecracker-version", FC_VERSION, "--disk-size-mb", "16", env=env)
        if built.returncode != 0:
            raise SystemExit(f"building the sample template failed: {built.stderr}")
        rootfs = tmp / "templates" / "sample" / "rootfs.ext4"

        def tool() -> tuple[float, dict[str, object]]:
            start = time.monotonic()
            proc = cli("boot", "sample", "--expect", MARKER.decode(), "--json", "--timeout", "120", env=env)
            elapsed = time.monotonic() - start
            result = json.loads(proc.stdout)
            if result.get("verdict") != "pass":
                raise SystemExit(f"boot did not pass: {result}")
            return elapsed, result

        _, first = tool()  # warm-up; also runs and caches the KVM probe
        accel, kernel_args = str(first["accel"]), str(first["kernel_args"])
        bare_qemu(kernel, rootfs, accel, kernel_args)
        tool_wall, tool_marker, baseline = [], [], []
        for _ in range(args.runs):
            baseline.append(bare_qemu(kernel, rootfs, accel, kernel_args))
            wall, result = tool()
            tool_wall.append(wall)
            tool_marker.append(float(str(result["time_to_marker_s"])))

    med_tool, med_base = statistics.median(tool_wall), statistics.median(baseline)
    print(f"sample template, kernel {kernel.name}, {first['vmm']}/{accel}, {args.runs} runs (medians):")
    print(f"  baseline bare-qemu  process start -> marker       {med_base:6.3f} s")
    print(f"  e2b-artifact boot   VMM start -> marker           {statistics.median(tool_marker):6.3f} s")
    print(f"  e2b-artifact boot   command start -> verdict      {med_tool:6.3f} s")
    print(f"  ratio command / bare-qemu                         {med_tool / med_base:6.2f}x")


if __name__ == "__main__":
    main()
