"""The sandbox every verifier tool runs in: a private filesystem view and resource limits.

A task's input (assembly, IR, C, test drivers) and the model's answer are untrusted text
that reaches real compilers, assemblers and emulators, and test programs built from them
are run. Each run therefore happens inside bubblewrap (`bwrap`):

- its filesystem is the toolchain (`/usr` and the top-level links into it, read-only) plus
  the run's own temporary work directory (read-write); `/tmp` is an empty tmpfs, `/proc`
  and `/dev` are the sandbox's own, and `/etc`, `/home`, `/root` and the server's files do
  not exist in it;
- it has no network, and its own PID, IPC and UTS namespaces: killing the sandbox's first
  process (what the timeout does) kills everything it started;
- `prlimit` caps the tool's memory, address space, CPU time, file size and process count and
  turns off core dumps. The process count is only enforced for a non-root user, so when
  the server runs as root the tool drops to `nobody` inside the sandbox (setpriv, with
  every capability dropped) and the work directory is handed to that user.

Where bubblewrap is missing or cannot create namespaces, `SandboxUnavailable` (a
MissingTool for "bwrap") says why; the verifiers then answer "unverified" naming it.
`LUTLM_SANDBOX=off` runs tools with the resource limits only, for machines where the input
is trusted (a user verifying their own code on their own laptop) and namespaces are not
available.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Limits", "SandboxUnavailable", "sandbox_argv", "sandbox_mode", "prepare_workdir"]

SANDBOX_ENV = "LUTLM_SANDBOX"
NOBODY = 65534

# Directories every toolchain lives under on a Linux distribution (Debian's merged /usr:
# /bin, /lib, /lib64 and /sbin are links into /usr).
_SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


class SandboxUnavailable(Exception):
    """The tool sandbox cannot run here; the message says why and what to do."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one tool run.

    memory: bytes of heap and other writable private memory (RLIMIT_DATA): what an
        `.incbin "/dev/zero"` or a runaway test allocates stops here.
    address_space: bytes of virtual address space, a looser backstop: qemu-user reserves
        4 GiB of it for a 32-bit guest before running anything.
    cpu_seconds: CPU time, a backstop behind the caller's wall-clock timeout.
    file_size: bytes any one file the tool writes may reach (stdout capture included).
    processes: processes and threads the run may have at once (a fork bomb stops here).
    """

    memory: int = 2 << 30
    address_space: int = 16 << 30
    cpu_seconds: int = 60
    file_size: int = 256 << 20
    processes: int = 64

    def prlimit_argv(self, prlimit: str) -> list[str]:
        return [
            prlimit,
            f"--data={self.memory}",
            f"--as={self.address_space}",
            f"--cpu={self.cpu_seconds}",
            f"--fsize={self.file_size}",
            f"--nproc={self.processes}",
            "--core=0",
            "--",
        ]


def sandbox_mode() -> str:
    """ "bwrap" (the default) or "off", from LUTLM_SANDBOX; anything else is a ValueError."""
    mode = os.environ.get(SANDBOX_ENV, "bwrap").strip().lower() or "bwrap"
    if mode in ("1", "on", "true"):
        mode = "bwrap"
    if mode in ("0", "false", "none"):
        mode = "off"
    if mode not in ("bwrap", "off"):
        raise ValueError(f"{SANDBOX_ENV} must be 'bwrap' or 'off', got {mode!r}")
    return mode


def _drop_to_nobody() -> bool:
    # RLIMIT_NPROC does not apply to root, and root would also see every file.
    return os.geteuid() == 0


def prepare_workdir(cwd: Path) -> None:
    """Let the sandboxed user write the work directory and read what was put in it."""
    if sandbox_mode() != "bwrap" or not _drop_to_nobody():
        return
    for path in [cwd, *cwd.rglob("*")]:
        try:
            os.chown(path, NOBODY, NOBODY, follow_symlinks=False)
        except OSError:
            pass


def _base_argv(cwd: Path, exe: str) -> list[str]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailable(
            "the tool sandbox needs bubblewrap (install with: apt-get install bubblewrap); "
            f"{SANDBOX_ENV}=off runs tools unsandboxed, for trusted input only"
        )
    argv = [bwrap, "--die-with-parent", "--new-session"]
    argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts"]
    argv += ["--unshare-cgroup-try"]
    if not _drop_to_nobody():
        argv.append("--unshare-user")  # how an unprivileged user gets the other namespaces
    else:
        # setpriv needs the first two to become nobody, and the chdir into nobody's work
        # directory the third; becoming nobody drops all three.
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_DAC_OVERRIDE"):
            argv += ["--cap-add", cap]
    argv += ["--ro-bind", "/usr", "/usr"]
    for name in _SYSTEM_DIRS:
        path = Path("/", name)
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), str(path)]
    argv += ["--ro-bind-try", "/etc/alternatives", "/etc/alternatives"]
    # A tool installed outside /usr (an LLVM under /opt) brings its prefix along.
    prefix = Path(exe).resolve().parent.parent
    if not any(prefix.is_relative_to(Path("/", d)) for d in ("usr", *_SYSTEM_DIRS)):
        argv += ["--ro-bind", str(prefix), str(prefix)]
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    # The work directory's parents exist in the sandbox only as a path to it: searchable,
    # whatever their modes outside (pytest's and many TMPDIRs are 0700).
    for parent in reversed(cwd.parents[:-1]):
        if parent != Path("/tmp"):
            argv += ["--perms", "0755", "--dir", str(parent)]
    argv += ["--bind", str(cwd), str(cwd), "--chdir", str(cwd), "--clearenv"]
    env = {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(cwd),
        "TMPDIR": str(cwd),
        # English diagnostics with ASCII quotes on every machine: a message fed back to a
        # model reads the way its training data did.
        "LC_ALL": "C",
        "LANG": "C",
    }
    for key, value in env.items():
        argv += ["--setenv", key, value]
    argv.append("--")
    if _drop_to_nobody():
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise SandboxUnavailable("the tool sandbox needs setpriv (util-linux) when run as root")
        argv += [
            setpriv,
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
        ]
    return argv


@functools.lru_cache(maxsize=1)
def _probe() -> str | None:
    """None when a trivial sandboxed run works, else why not (checked once per process)."""
    import tempfile

    true = shutil.which("true") or "/usr/bin/true"
    with tempfile.TemporaryDirectory(prefix="lutlm-sandbox-") as d:
        prepare_workdir(Path(d))
        try:
            argv = [*_base_argv(Path(d), true), true]
        except SandboxUnavailable as e:
            return str(e)
        try:
            res = subprocess.run(argv, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"bwrap could not run: {e}"
    if res.returncode != 0:
        why = res.stderr.decode("utf-8", "replace").strip() or f"exit code {res.returncode}"
        return (
            f"the tool sandbox (bubblewrap) cannot start here: {why}; it needs user or "
            f"mount namespaces. {SANDBOX_ENV}=off runs tools unsandboxed, for trusted input only"
        )
    return None


def sandbox_argv(exe: str, args: list[str], cwd: Path, limits: Limits) -> list[str]:
    """The argv that runs `exe args` in `cwd` under the sandbox (or, with LUTLM_SANDBOX=off,
    under the resource limits alone). SandboxUnavailable says why it cannot."""
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        raise SandboxUnavailable("the tool sandbox needs prlimit (util-linux)")
    if sandbox_mode() == "off":
        return [*limits.prlimit_argv(prlimit), exe, *args]
    why = _probe()
    if why is not None:
        raise SandboxUnavailable(why)
    return [*_base_argv(cwd, exe), *limits.prlimit_argv(prlimit), exe, *args]
