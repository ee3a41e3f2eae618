"""The fault suite: short in CI, full with MQ_FAULTS=full; figures collected for docs/reliability.md.

``MQ_FAULTS=full`` runs every fault at the scale the reliability issue asks for (50 kills, 20
power cuts, 10 minutes of load); ``MQ_FAULTS_FIGURES=FILE`` writes every figure the run measured
to FILE as JSON, for docs/reliability.md.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

FULL = os.environ.get("MQ_FAULTS") == "full"
_figures: dict[str, dict] = {}


def scaled(short, full):
    """The short figure in CI, the full one with MQ_FAULTS=full."""
    return full if FULL else short


@pytest.fixture
def figures(request):
    """Record what a fault test measured: figures["name"] = value."""
    recorded: dict = {}
    _figures[request.node.name] = recorded
    return recorded


def pytest_terminal_summary(terminalreporter):
    if not _figures:
        return
    terminalreporter.section("fault suite figures")
    for test, recorded in _figures.items():
        if recorded:
            terminalreporter.write_line(f"{test}: {json.dumps(recorded, sort_keys=True)}")
    target = os.environ.get("MQ_FAULTS_FIGURES")
    if target:
        Path(target).write_text(
            json.dumps({"full": FULL, "figures": _figures}, indent=1, sort_keys=True) + "\n"
        )


def _can_mount() -> str | None:
    """Why loop-device file systems cannot be used here, or None if they can."""
    if os.geteuid() != 0:
        return "needs root to mount a loop device"
    for tool in ("mkfs.ext4", "mount", "umount", "losetup"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control is missing)"
    return None


class LoopFileSystem:
    """A small ext4 file system on a loop device: a disk the test can fill or cut the power of."""

    def __init__(self, root: Path, size_mb: int) -> None:
        self.image = root / f"disk-{uuid.uuid4().hex[:8]}.img"
        self.mountpoint = root / "mnt"
        self.size_mb = size_mb
        self.mounted = False

    def create(self) -> LoopFileSystem:
        self.mountpoint.mkdir(exist_ok=True)
        subprocess.run(["truncate", "-s", f"{self.size_mb}M", str(self.image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(self.image)], check=True)
        return self.mount()

    def mount(self) -> LoopFileSystem:
        subprocess.run(["mount", "-o", "loop", str(self.image), str(self.mountpoint)], check=True)
        self.mounted = True
        return self

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", str(self.mountpoint)], check=True)
            self.mounted = False

    def cut_power(self) -> None:
        """FS_IOC_SHUTDOWN with FS_GOING_DOWN_NOLOGFLUSH (xfstests' godown): from now on the file
        system writes nothing, not even what its journal or the page cache still holds."""
        import fcntl
        import struct

        fs_ioc_shutdown = 0x8004587D  # _IOR('X', 125, __u32)
        going_down_nologflush = 0x2
        fd = os.open(self.mountpoint, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, fs_ioc_shutdown, struct.pack("I", going_down_nologflush))
        finally:
            os.close(fd)


@pytest.fixture
def loop_fs(tmp_path):
    """A factory of loop-device ext4 file systems, unmounted at the end; skips where impossible."""
    reason = _can_mount()
    if reason:
        pytest.skip(reason)
    made: list[LoopFileSystem] = []

    def make(size_mb: int = 64) -> LoopFileSystem:
        fs = LoopFileSystem(tmp_path, size_mb)
        made.append(fs)
        try:
            return fs.create()
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot create a loop file system here: {exc}")

    yield make
    for fs in made:
        try:
            fs.unmount()
        except subprocess.CalledProcessError:
            subprocess.run(["umount", "-l", str(fs.mountpoint)], check=False)
