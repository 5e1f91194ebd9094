"""The architectures a transpiled answer is built and run for: each one's compiler, flags
and (for a foreign one) the qemu-user that runs its programs on this x86-64 host."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["TARGETS", "Target", "get_target"]


@dataclass(frozen=True)
class Target:
    """How to build and run a program for one architecture.

    compiler and qemu are tool names for find_tool; qemu is None for the host, whose
    programs run directly. sysroot is passed to qemu-user with -L so that dynamically
    linked programs find their loader; lutlm links statically anyway (`link_flags`).
    """

    name: str
    triple: str
    compiler: str
    cflags: tuple[str, ...] = ()
    link_flags: tuple[str, ...] = ()
    qemu: str | None = None
    sysroot: str | None = None

    def run_argv(self, program: str | Path) -> list[str]:
        """argv that runs a program built for this target on this (x86-64) host."""
        if self.qemu is None:
            return [str(program)]
        argv = [self.qemu]
        if self.sysroot:
            argv += ["-L", self.sysroot]
        return [*argv, str(program)]

    def tools(self) -> list[str]:
        """Every tool this target needs, for up-front MissingTool checks."""
        return [self.compiler] + ([self.qemu] if self.qemu else [])


TARGETS: dict[str, Target] = {
    "x86_64": Target(name="x86_64", triple="x86_64-linux-gnu", compiler="gcc"),
    "aarch64": Target(
        name="aarch64",
        triple="aarch64-linux-gnu",
        compiler="aarch64-linux-gnu-gcc",
        link_flags=("-static",),
        qemu="qemu-aarch64",
        sysroot="/usr/aarch64-linux-gnu",
    ),
    "armv5": Target(
        name="armv5",
        triple="arm-linux-gnueabi",
        compiler="arm-linux-gnueabi-gcc",
        cflags=("-march=armv5te", "-marm"),
        link_flags=("-static",),
        qemu="qemu-arm",
        sysroot="/usr/arm-linux-gnueabi",
    ),
    "riscv64": Target(
        name="riscv64",
        triple="riscv64-linux-gnu",
        compiler="riscv64-linux-gnu-gcc",
        link_flags=("-static",),
        qemu="qemu-riscv64",
        sysroot="/usr/riscv64-linux-gnu",
    ),
}


def get_target(name: str) -> Target:
    """TARGETS[name], or a ValueError that lists the known targets."""
    try:
        return TARGETS[name]
    except KeyError:
        known = ", ".join(sorted(TARGETS))
        raise ValueError(f"unknown target {name!r}; known targets: {known}") from None
