"""``e2b-artifact kernel``: check, extract, list and fetch guest kernels."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ExitCode
from .common import AppState, ProgressLine, emit, json_option, progress, verdict

ARCH_CHOICE = click.Choice(["x86_64", "aarch64"])


def _firecracker_version(value: str | None) -> str | None:
    """A --firecracker-version that names no version is a usage error, not an unknown Firecracker."""
    from ..errors import ArtifactError
    from ..versions import parse_firecracker_version

    if value is not None and parse_firecracker_version(value) is None:
        raise ArtifactError(f"--firecracker-version {value!r} is not a Firecracker version",
                            hint="e.g. v1.14.1_431f1fc, v1.14-0.2.0 or v1.17.0", code=ExitCode.USAGE)
    return value


@click.group("kernel")
def command() -> None:
    """Guest kernels: can Firecracker boot them, and will they find their disk?"""


@command.command("check")
@click.argument("kernel", type=click.Path(path_type=Path))
@click.option("--firecracker-version", metavar="V", help="e.g. v1.12.1_d990331: decides whether ACPI discovery works.")
@click.option("--arch", type=ARCH_CHOICE, help="The guest arch [default: the kernel's own].")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="The kernel's .config, when it embeds none (IKCONFIG wins when present).")
@json_option
def check(kernel: Path, firecracker_version: str | None, arch: str | None, config_file: Path | None,
          as_json: bool) -> ExitCode:
    """Check KERNEL (vmlinux, bzImage or arm64 Image) for Firecracker. Exit 0 pass, 1 a FAIL."""
    from ..kernel.check import check_kernel

    firecracker_version = _firecracker_version(firecracker_version)
    report = check_kernel(kernel, firecracker_version=firecracker_version, arch=arch, config=config_file)
    fc = firecracker_version or "Firecracker version not given"
    head = f"{kernel}: {report.kind}, {report.arch or 'unknown arch'}, {fc}"
    emit(as_json, report.to_dict(), [head, *(f.line() for f in report.findings),
                                     "result: " + ("ok" if report.ok else "FAIL")])
    return verdict(report.ok)


@command.command("extract")
@click.argument("bzimage", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", type=click.Path(path_type=Path), required=True,
              help="Where to write the ELF vmlinux (written to a temp name, then renamed).")
@json_option
def extract_cmd(bzimage: Path, out: Path, as_json: bool) -> ExitCode:
    """Write the ELF vmlinux inside BZIMAGE (gzip, xz, lzma, lz4, zstd or bzip2 payload) to OUT."""
    from ..kernel.check import extract

    method, size = extract(bzimage, out)
    emit(as_json, {"ok": True, "bzimage": str(bzimage), "output": str(out), "compression": method, "size": size},
         [f"{out}: ELF vmlinux, {size} bytes ({method} payload of {bzimage})"])
    return ExitCode.OK


@command.command("list")
@json_option
@click.pass_obj
def list_cmd(app: AppState, as_json: bool) -> ExitCode:
    """The kernel catalog, and the kernels installed under $HOST_KERNELS_DIR."""
    from ..kernel.catalog import installed_kernels, load_catalog

    root = app.settings["HOST_KERNELS_DIR"].path
    catalog = load_catalog()
    installed = installed_kernels(root)
    names = {k.name for k in installed}
    lines = ["catalog:"]
    for k in catalog:
        mark = "installed" if k.name in names else ""
        lines.append(f"  {k.name:<26} {k.arch:<8} {k.source:<22} sha256 {'known' if k.sha256 else 'unknown':<8} "
                     f"{mark}".rstrip())
    lines.append(f"installed in {root}:" if installed else f"installed in {root}: none")
    lines += [f"  {k.name:<26} {k.arch or '?':<8} {k.kind:<12} {k.size:>10}  {k.path}" for k in installed]
    emit(as_json, {"ok": True, "host_kernels_dir": str(root),
                   "catalog": [vars(k) for k in catalog],
                   "installed": [{**vars(k), "path": str(k.path)} for k in installed]}, lines)
    return ExitCode.OK


@command.command("fetch")
@click.argument("name_or_url", metavar="NAME|URL")
@click.option("--sha256", "sha256", metavar="H", help="Expected sha256 (overrides the catalog's).")
@click.option("--name", "name", metavar="N",
              help="Install as $HOST_KERNELS_DIR/N/vmlinux.bin [default: from NAME/URL].")
@click.option("--arch", type=ARCH_CHOICE, help="Which catalog entry [default: this machine's arch].")
@click.option("--firecracker-version", metavar="V", help="Passed to the check after the download.")
@click.option("--force", is_flag=True, help="Replace an installed kernel with other content (the old one is moved "
                                            "to $HOST_KERNELS_DIR/.replaced/).")
@click.option("--extract/--no-extract", default=True, show_default=True,
              help="Install the ELF vmlinux inside a downloaded bzImage; --no-extract installs the bzImage as it is "
                   "for a --firecracker-version 1.17+ (which boots it) and refuses it otherwise.")
@json_option
@click.pass_obj
def fetch_cmd(app: AppState, name_or_url: str, sha256: str | None, name: str | None, arch: str | None,
              firecracker_version: str | None, force: bool, extract: bool, as_json: bool) -> ExitCode:
    """Download a catalog kernel or a URL into $HOST_KERNELS_DIR/<name>/vmlinux.bin, verified, then check it.

    Exit 0 installed and passing, 1 installed but the check failed, 3 not a kernel Firecracker
    loads (nothing installed), 6 installed with other content (use --force), 7 network or HTTP
    error, 8 sha256 mismatch (nothing installed).
    """
    from ..kernel.catalog import default_arch, fetch, resolve
    from ..kernel.check import check_kernel
    from ..kernel.rules import bzimage_bootable, load_rules

    firecracker_version = _firecracker_version(firecracker_version)
    root = app.settings["HOST_KERNELS_DIR"].path
    entry = resolve(name_or_url, arch or default_arch(), name, sha256)
    progress(f"fetching {entry.url} -> {root / entry.name}/vmlinux.bin")
    bar = ProgressLine("fetch")
    try:
        result = fetch(entry, root, force=force, progress=bar.update, note=lambda msg: progress(f"fetch: {msg}"),
                       extract=extract, keep_bzimage=bzimage_bootable(load_rules(), firecracker_version) is True)
    finally:
        bar.close()
    report = check_kernel(result.path, firecracker_version=firecracker_version, arch=entry.arch)
    lines = [f"{result.state}: {result.path} (sha256 {result.sha256}, "
             f"{'verified' if result.verified else 'not verified: no known digest'})"]
    if result.replaced_to:
        lines.append(f"previous kernel moved to {result.replaced_to} (undo: mv {result.replaced_to}/vmlinux.bin "
                     f"{result.path})")
    lines += [f"note: {n}" for n in result.notes]
    lines += [f.line() for f in report.findings]
    lines.append("result: " + ("ok" if report.ok else "FAIL (the kernel is installed; see the findings)"))
    emit(as_json, {"ok": report.ok, "fetch": result.to_dict(), "check": report.to_dict()}, lines)
    return verdict(report.ok)

