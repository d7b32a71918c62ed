"""Booting a build for real: QEMU or Firecracker, the console watcher, the verdict."""
