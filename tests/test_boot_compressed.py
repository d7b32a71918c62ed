"""``boot`` of a build stored compressed: the device is assembled from the frames into the throwaway disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import test_boot
from tests.conftest import cli, sha256
from tests.test_boot import FC_VERSION, MARKER, BootEnv

qemu, boot_env = test_boot.qemu, test_boot.boot_env  # the same session fixtures, used here too

pytestmark = pytest.mark.timeout(600)


def test_compressed_build_boots_and_stays_untouched(boot_env: BootEnv, sample_tar: Path, envd_standin: Path) -> None:
    built = cli("--storage", boot_env.storage, "build", "--rootfs-tar", sample_tar, "--envd", envd_standin,
                "--build-id", "packed", "--kernel-version", "test-cmdline", "--firecracker-version", FC_VERSION,
                "--disk-size-mb", "16", "--compress", "zstd", env=boot_env.env)
    assert built.returncode == 2 and "not a UUID" in built.stderr  # headers name builds by UUID
    build_id = "9b0e6c7e-4a51-4f3e-9d8e-6b1f2a3c4d5e"
    built = cli("--storage", boot_env.storage, "build", "--rootfs-tar", sample_tar, "--envd", envd_standin,
                "--build-id", build_id, "--kernel-version", "test-cmdline", "--firecracker-version", FC_VERSION,
                "--disk-size-mb", "16", "--compress", "zstd", env=boot_env.env)
    assert built.returncode == 0, built.stderr
    stored = boot_env.storage / build_id / "rootfs.ext4.zstd"
    before = sha256(stored)
    proc, result = boot_env.boot(build_id, "--expect", MARKER)
    assert proc.returncode == 0, proc.stdout
    assert result["verdict"] == "pass"
    notes = result["notes"]
    assert isinstance(notes, list) and any("stored compressed" in str(n) for n in notes)
    assert sha256(stored) == before and not (boot_env.storage / build_id / "rootfs.ext4").exists()
