"""Running the real compilers, assemblers and emulators that check a model's answer.

Every verifier in lutlm.tasks goes through `run_tool`: an argv list (never a shell, so no
user text is ever parsed by one), run inside the sandbox of lutlm.tasks.sandbox (the
toolchain and a fresh temporary work directory are all it sees; memory, CPU time, file
size and process count are capped), a wall-clock timeout that kills the whole sandbox (an
emulated test that loops forever takes its children with it), and output decoded
leniently and capped. Tools are looked up with
`find_tool`, which also accepts the versioned names distributions install (opt-17,
clang-17), so a machine with only a newer LLVM still verifies.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .report import Verification
from .sandbox import Limits, SandboxUnavailable, prepare_workdir, sandbox_argv, sandbox_mode
from .untrusted import Language, UnsafeInput, check_source

__all__ = [
    "MissingTool",
    "ToolError",
    "ToolResult",
    "find_tool",
    "run_tool",
    "workdir",
    "trim_message",
    "resolve_tests",
    "driver_stem",
    "screen_answer",
    "missing_tool_verdict",
    "tail",
]

# Enough for a compiler's diagnostics or a test's printed results; a runaway program that
# prints forever must not exhaust memory or flood a JSON reply.
DEFAULT_MAX_OUTPUT = 256 * 1024

# Debian package that provides each tool, for the "install with" hint in messages.
PACKAGES: dict[str, str] = {
    "opt": "llvm",
    "llc": "llvm",
    "llvm-size": "llvm",
    "llvm-mc": "llvm",
    "clang": "clang",
    "gcc": "gcc",
    "objdump": "binutils",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "arm-linux-gnueabi-gcc": "gcc-arm-linux-gnueabi",
    "riscv64-linux-gnu-gcc": "gcc-riscv64-linux-gnu",
    "bwrap": "bubblewrap",
    "qemu-aarch64": "qemu-user",
    "qemu-arm": "qemu-user",
    "qemu-riscv64": "qemu-user",
}


class MissingTool(Exception):
    """A tool a verifier needs is not installed; `tool` names it (as asked for, unversioned)."""

    def __init__(self, tool: str, message: str | None = None) -> None:
        self.tool = tool
        if message is None:
            pkg = PACKAGES.get(tool)
            hint = f" (install with: apt-get install {pkg})" if pkg else ""
            message = f"{tool} not found on PATH{hint}"
        super().__init__(message)


class ToolError(ValueError):
    """A tool rejected its input (invalid IR, an assembly error); the message is the tool's."""

    def __init__(self, tool: str, message: str) -> None:
        self.tool = tool
        super().__init__(message)


@dataclass
class ToolResult:
    """What one tool run produced. returncode is None when the run timed out; a negative
    returncode means the process died from that signal (a crash)."""

    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        """How the run ended, in words: 'exit code 1', 'timed out', 'killed by SIGSEGV'."""
        if self.timed_out:
            return "timed out"
        rc = self.returncode
        if rc is not None and rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            return f"killed by {name}"
        return f"exit code {rc}"

    def error(self) -> str:
        """The tool's own diagnostics (trimmed), or how the run ended when it printed none."""
        return trim_message(self.stderr) or self.describe()


_VERSIONED = re.compile(r"-(\d+)(?:\.(\d+))?$")


def find_tool(name: str) -> str | None:
    """Full path of `name`, or of its highest versioned variant (opt-17 before opt-15).

    Distributions install several LLVM releases side by side with a version suffix and
    often no unversioned name; the newest is the likeliest to accept a model's pass names.
    A name containing a path separator is taken as a path.
    """
    if os.sep in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    found = shutil.which(name)
    if found:
        return found
    best: tuple[tuple[int, int], str] | None = None
    for directory in os.environ.get("PATH", os.defpath).split(os.pathsep):
        try:
            entries = os.listdir(directory or ".")
        except OSError:
            continue
        for entry in entries:
            if not entry.startswith(name + "-"):
                continue
            m = _VERSIONED.fullmatch(entry[len(name) :])
            if not m:
                continue
            path = os.path.join(directory or ".", entry)
            if not (os.path.isfile(path) and os.access(path, os.X_OK)):
                continue
            version = (int(m.group(1)), int(m.group(2) or 0))
            if best is None or version > best[0]:
                best = (version, path)
    return best[1] if best else None


def _read_capped(f: IO[bytes], limit: int) -> str:
    """The first `limit` bytes of a captured stream, decoded leniently, with a note of how
    much was left out."""
    size = f.seek(0, os.SEEK_END)
    f.seek(0)
    text = f.read(limit).decode("utf-8", errors="replace")
    if size > limit:
        text += f"\n[... {size - limit} more bytes truncated]"
    return text


def run_tool(
    argv: list[str],
    *,
    cwd: str | Path,
    timeout: float,
    stdin: str | None = None,
    max_output: int = DEFAULT_MAX_OUTPUT,
    untrusted: bool = False,
    max_memory: int = 2 << 30,
) -> ToolResult:
    """Run argv (no shell) in the sandbox, in cwd; kill it after `timeout` seconds.

    argv[0] is resolved with find_tool, so "opt" finds opt-17 where only that exists;
    MissingTool is raised when it cannot be found, or (naming "bwrap") when the sandbox
    cannot run. The tool sees the toolchain and cwd only: every file it reads or writes
    must be in cwd. The process gets its own session and the sandbox its own PID
    namespace, so a timeout also kills anything it started (qemu's guest, a test's
    children). stdout and stderr go to temporary files, not pipes, so a program printing
    without end costs disk, not memory; they come back decoded with errors="replace" and
    capped at max_output bytes each.

    Every run is capped at `max_memory` bytes of writable memory, `timeout` (+2 s) of CPU
    time, 64 processes and a file size of 4 * max_output (at least 64 MiB), with no
    core dumps. untrusted=True marks a model's program (a test linked with a candidate):
    its file-size cap is kept at that floor, since it has no legitimate large output.
    """
    if not argv:
        raise ValueError("run_tool needs a non-empty argv")
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout}")
    exe = find_tool(argv[0])
    if exe is None:
        raise MissingTool(argv[0])
    cwd = Path(cwd).resolve()
    limits = _limits(timeout, max_output, untrusted, max_memory)
    try:
        full = sandbox_argv(exe, list(argv[1:]), cwd, limits)
    except SandboxUnavailable as e:
        raise MissingTool("bwrap", str(e)) from None
    prepare_workdir(cwd)
    status, stdout, stderr = _run_captured(full, cwd, stdin, timeout, max_output)
    return ToolResult(
        argv=list(argv),
        returncode=None if status is None else _returncode(status),
        stdout=stdout,
        stderr=_local_names(stderr, exe, argv[0], cwd),
        timed_out=status is None,
    )


def _limits(timeout: float, max_output: int, untrusted: bool, max_memory: int) -> Limits:
    """The resource limits of one run_tool call (its docstring says which and why).

    Returns:
        The Limits for the sandbox.
    """
    file_size = max(4 * max_output, 64 << 20)
    return Limits(
        memory=max_memory,
        cpu_seconds=int(timeout) + 2,
        file_size=64 << 20 if untrusted else file_size,
    )


def _run_captured(
    full: list[str], cwd: Path, stdin: str | None, timeout: float, max_output: int
) -> tuple[int | None, str, str]:
    """Run a sandbox command line in its own session, killing the whole group on timeout.

    Returns:
        (the raw exit status, None when the run timed out; stdout; stderr), each output
        read from a temporary file and capped at max_output bytes.
    """
    timed_out = False
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f:
        proc = subprocess.Popen(
            full,
            cwd=str(cwd),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=out_f,
            stderr=err_f,
            start_new_session=True,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )
        try:
            proc.communicate(
                input=stdin.encode("utf-8") if stdin is not None else None, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            proc.wait()
        except BaseException:
            _kill_group(proc)
            proc.wait()
            raise
        _kill_group(proc)  # anything it left running in the background
        stdout = _read_capped(out_f, max_output)
        stderr = _read_capped(err_f, max_output)
    return (None if timed_out else proc.returncode), stdout, stderr


def _local_names(stderr: str, exe: str, name: str, cwd: Path) -> str:
    """A tool's diagnostics with the names its user knows.

    Returns:
        stderr with the tool's found path (`exe`) replaced by the `name` it was asked for,
        and paths inside the throw-away work directory `cwd` made relative.
    """
    if exe != name:
        stderr = stderr.replace(exe + ":", name + ":")
    return stderr.replace(str(cwd).rstrip(os.sep) + os.sep, "")


# Signals a program can die of; bwrap reports such a death as exit status 128 + signal.
_DEATH_SIGNALS = {
    int(s)
    for s in (
        signal.SIGSEGV,
        signal.SIGABRT,
        signal.SIGBUS,
        signal.SIGILL,
        signal.SIGFPE,
        signal.SIGKILL,
        signal.SIGTERM,
        signal.SIGXCPU,
        signal.SIGXFSZ,
        signal.SIGTRAP,
    )
}


def _returncode(rc: int) -> int:
    """The tool's exit status, with a death by signal as -signal (as subprocess reports
    it for a direct child)."""
    if sandbox_mode() == "bwrap" and rc > 128 and rc - 128 in _DEATH_SIGNALS:
        return -(rc - 128)
    return rc


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass


@contextmanager
def workdir(prefix: str = "lutlm-task-") -> Iterator[Path]:
    """A fresh temporary directory, removed afterwards: every tool run happens in one, so
    answers never see each other's files and nothing is written next to the user's."""
    with tempfile.TemporaryDirectory(prefix=prefix) as d:
        yield Path(d)


_TOOL_PATH = re.compile(r"(?m)^/\S*/(ld|as|collect2|ld\.bfd|ld\.gold)(?=:)")


def trim_message(text: str, *, max_lines: int = 30, max_chars: int = 4000) -> str:
    """The useful head of a tool's diagnostics, short enough to show or feed back to a model.

    LLVM's crash reports end in a stack dump that says nothing about the input, so
    everything from "PLEASE submit a bug report" on is dropped.
    """
    # gcc's driver names its linker and assembler by their full install paths.
    text = _TOOL_PATH.sub(r"\1", text)
    lines = []
    for line in text.strip().splitlines():
        if line.startswith("PLEASE submit a bug report") or line.startswith("Stack dump:"):
            break
        lines.append(line.rstrip())
    if len(lines) > max_lines:
        lines = lines[:max_lines] + [f"[... {len(lines) - max_lines} more lines]"]
    msg = "\n".join(lines)
    if len(msg) > max_chars:
        msg = msg[:max_chars] + " [...]"
    return msg


def resolve_tests(tests: str | Path | list[str | Path]) -> list[tuple[str, str]]:
    """(name, C source) of each test driver.

    `tests` is a directory (its *.c files, sorted), a file, or a list of files. A string
    that is not an existing path but contains a newline is taken as a driver's source
    text (what an HTTP client sends), named test_<i>.c. A path that does not exist is a
    ValueError: a typo must not look like "no tests".
    """
    items = tests if isinstance(tests, list | tuple) else [tests]
    found: list[tuple[str, str]] = []
    for i, item in enumerate(items):
        if isinstance(item, str) and "\n" in item:
            found.append((f"test_{i}.c", item))
            continue
        path = Path(item)
        if path.is_dir():
            for f in sorted(path.glob("*.c")):
                found.append((f.name, f.read_text(encoding="utf-8", errors="replace")))
        elif path.is_file():
            found.append((path.name, path.read_text(encoding="utf-8", errors="replace")))
        else:
            raise ValueError(f"test {str(item)!r} is neither a file nor a directory")
    names = [n for n, _ in found]
    if len(set(names)) != len(names):
        # Two drivers called test.c from different directories: keep both, distinctly.
        found = [(f"{i}_{n}", src) for i, (n, src) in enumerate(found)]
    return found


def driver_stem(name: str) -> str:
    """A test driver's file stem made safe to name the files built from it.

    Returns:
        The stem of `name` with every character but letters, digits and "_" replaced by "_".
    """
    return re.sub(r"[^A-Za-z0-9_]", "_", Path(name).stem)


def missing_tool_verdict(e: MissingTool, details: dict) -> Verification:
    """The verdict on an answer that could not be checked because a tool is missing.

    Returns:
        An "unverified" Verification naming the tool.
    """
    return Verification("unverified", str(e), tool=e.tool, details=details)


def screen_answer(
    candidate: str,
    language: Language,
    tests: list[tuple[str, str]],
    tools: Sequence[str],
    details: dict,
) -> Verification | None:
    """What a test-running verifier decides before it builds anything.

    The test drivers are the caller's input, so one that would read a file is a
    ValueError (UnsafeInput); in the `candidate` it is the model's fault.

    Args:
        candidate: the model's answer, in `language`.
        tests: resolve_tests' (name, C source) of each driver.
        tools: every tool the verifier will run, looked up now so that a missing one is
            reported before any work.
        details: the verifier's details, carried by the verdict.

    Returns:
        The early verdict: "failed" when the candidate would read a file, "unverified"
        when there are no tests or a tool is missing; None when the answer can be checked.
    """
    for name, src in tests:
        check_source(src, "c", f"test {name}")
    try:
        check_source(candidate, language, "the candidate")
    except UnsafeInput as e:
        return Verification("failed", str(e), details=details)
    if not tests:
        return Verification("unverified", "no tests given", details=details)
    for tool in tools:
        if find_tool(tool) is None:
            return missing_tool_verdict(MissingTool(tool), details)
    return None


def tail(text: str, limit: int = 2000) -> str:
    """The last `limit` characters of a program's output: where failures are reported."""
    return text if len(text) <= limit else "[...]" + text[-limit:]
