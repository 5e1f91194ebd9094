"""The verifier sandbox and the directive checks, attacked the way a hostile request would.

Each test builds a real program (or feeds a real tool) that tries to read the server's
files, reach the network, exhaust memory, fork without end or fill the disk, and asserts
that run_tool stops it. The directive tests feed every spelling of a file-reading
directive to check_source and to the verifiers' public functions.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from lutlm.tasks import sandbox
from lutlm.tasks.toolchain import MissingTool, run_tool
from lutlm.tasks.untrusted import UnsafeInput, check_source

from .test_tasks_verify import require

SECRET = "lutlm-sandbox-secret-7f3a"


def build(tmp_path: Path, name: str, source: str) -> Path:
    """Compile a C program with the sandboxed gcc, in the run's own work directory."""
    (tmp_path / f"{name}.c").write_text(source)
    res = run_tool(["gcc", "-O1", f"{name}.c", "-o", name], cwd=tmp_path, timeout=60)
    assert res.ok, res.stderr
    return tmp_path / name


@pytest.fixture
def secret_file(tmp_path_factory) -> Path:
    """A file outside every work directory that no tool run may read."""
    path = tmp_path_factory.mktemp("server-files") / "secret.txt"
    path.write_text(SECRET + "\n")
    return path


def test_tools_see_only_the_toolchain_and_their_work_directory(tmp_path, secret_file):
    require("bwrap", "gcc")
    prog = build(
        tmp_path,
        "peek",
        r"""
        #include <stdio.h>
        int main(int argc, char **argv) {
            for (int i = 1; i < argc; i++) {
                FILE *f = fopen(argv[i], "r");
                char buf[256] = {0};
                if (f && fgets(buf, sizeof buf, f)) printf("%s: %s", argv[i], buf);
                else printf("%s: unreadable\n", argv[i]);
            }
            return 0;
        }
        """,
    )
    (tmp_path / "mine.txt").write_text("own file\n")
    home_file = str(Path.home() / ".bashrc")  # the server user's home, whoever that is
    paths = [str(secret_file), "/etc/os-release", "/etc/passwd", home_file, "mine.txt"]
    res = run_tool([str(prog), *paths], cwd=tmp_path, timeout=10, untrusted=True)
    assert res.ok, res.stderr
    assert SECRET not in res.stdout
    for p in paths[:-1]:
        assert f"{p}: unreadable" in res.stdout
    assert "mine.txt: own file" in res.stdout
    # The toolchain stays visible (headers, the C library).
    assert os.path.exists("/usr/include/stdio.h")


def test_tools_have_no_network(tmp_path):
    require("bwrap", "gcc")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        prog = build(
            tmp_path,
            "dial",
            r"""
            #include <arpa/inet.h>
            #include <stdio.h>
            #include <stdlib.h>
            #include <sys/socket.h>
            int main(int argc, char **argv) {
                int s = socket(AF_INET, SOCK_STREAM, 0);
                struct sockaddr_in a = {0};
                a.sin_family = AF_INET;
                a.sin_port = htons(atoi(argv[1]));
                a.sin_addr.s_addr = htonl(0x7f000001);
                printf(connect(s, (struct sockaddr *)&a, sizeof a) == 0 ? "connected\n"
                                                                        : "refused\n");
                return 0;
            }
            """,
        )
        res = run_tool([str(prog), str(port)], cwd=tmp_path, timeout=10, untrusted=True)
        assert res.stdout.strip() == "refused"
    finally:
        listener.close()


def test_memory_processes_and_file_size_are_capped(tmp_path):
    require("bwrap", "gcc")
    hog = build(
        tmp_path,
        "hog",
        r"""
        #include <stdio.h>
        #include <stdlib.h>
        #include <string.h>
        int main(void) {
            size_t got = 0;
            for (int i = 0; i < 64; i++) {  /* up to 8 GiB in 128 MiB pieces */
                char *p = malloc(128u << 20);
                if (!p) break;
                memset(p, 1, 128u << 20);
                got += 128;
            }
            printf("%zu\n", got);
            return 0;
        }
        """,
    )
    res = run_tool([str(hog)], cwd=tmp_path, timeout=30, untrusted=True, max_memory=512 << 20)
    assert res.ok, res.describe()
    assert int(res.stdout) < 512

    bomb = build(
        tmp_path,
        "bomb",
        r"""
        #include <stdio.h>
        #include <unistd.h>
        int main(void) {
            int n = 0;
            for (int i = 0; i < 500; i++) {
                pid_t p = fork();
                if (p == 0) { sleep(3); _exit(0); }
                if (p < 0) break;
                n++;
            }
            printf("%d\n", n);
            return 0;
        }
        """,
    )
    res = run_tool([str(bomb)], cwd=tmp_path, timeout=20, untrusted=True)
    assert res.ok, res.describe()
    assert int(res.stdout) < sandbox.Limits().processes

    filler = build(
        tmp_path,
        "fill",
        r"""
        #include <stdio.h>
        int main(void) {
            static char block[1 << 20];
            FILE *f = fopen("big", "w");
            for (int i = 0; i < 1024; i++) fwrite(block, 1, sizeof block, f);
            fclose(f);
            return 0;
        }
        """,
    )
    res = run_tool([str(filler)], cwd=tmp_path, timeout=30, untrusted=True)
    assert res.describe() == "killed by SIGXFSZ"
    assert (tmp_path / "big").stat().st_size <= 64 << 20


def test_a_timeout_kills_everything_the_tool_started(tmp_path):
    require("bwrap")
    marker = tmp_path / "late"
    t0 = time.monotonic()
    res = run_tool(["sh", "-c", "(sleep 3; touch late) & sleep 30"], cwd=tmp_path, timeout=0.5)
    assert res.timed_out and time.monotonic() - t0 < 10
    time.sleep(4)
    assert not marker.exists()  # the background child died with the sandbox


def test_a_crash_is_reported_as_the_signal(tmp_path):
    require("bwrap", "gcc")
    prog = build(tmp_path, "crash", "int main(void) { return *(volatile int *)0; }\n")
    res = run_tool([str(prog)], cwd=tmp_path, timeout=10, untrusted=True)
    assert res.describe() == "killed by SIGSEGV"
    prog = build(tmp_path, "exit3", "int main(void) { return 3; }\n")
    assert run_tool([str(prog)], cwd=tmp_path, timeout=10).returncode == 3


def test_assembler_macros_cannot_read_files_either(tmp_path, secret_file):
    """A directive built by a macro gets past any text check; the sandbox still holds."""
    require("bwrap", "llvm-mc")
    (tmp_path / "in.s").write_text(
        f'.macro grab kind\n.inc\\kind "{secret_file}"\n.endm\n.data\ngrab bin\n'
    )
    res = run_tool(["llvm-mc", "-filetype=asm", "in.s"], cwd=tmp_path, timeout=10)
    assert not res.ok
    assert SECRET not in res.stdout + res.stderr
    assert SECRET.encode().hex() not in (res.stdout + res.stderr).lower()


def test_unavailable_sandbox_is_a_missing_tool_with_a_reason(tmp_path, monkeypatch):
    real_which = sandbox.shutil.which
    monkeypatch.setattr(
        sandbox.shutil, "which", lambda name, *a, **k: None if name == "bwrap" else real_which(name)
    )
    sandbox._probe.cache_clear()
    try:
        with pytest.raises(MissingTool) as e:
            run_tool(["/usr/bin/true"], cwd=tmp_path, timeout=5)
    finally:
        sandbox._probe.cache_clear()
    assert e.value.tool == "bwrap"
    assert "apt-get install bubblewrap" in str(e.value) and "LUTLM_SANDBOX=off" in str(e.value)


def test_sandbox_off_still_limits(tmp_path, monkeypatch):
    require("gcc")
    monkeypatch.setenv("LUTLM_SANDBOX", "off")
    res = run_tool(["cat", "/proc/self/limits"], cwd=tmp_path, timeout=10)
    limits = {line[:26].strip(): line[26:].split()[0] for line in res.stdout.splitlines()[1:]}
    assert limits["Max core file size"] == "0"
    assert limits["Max processes"] == str(sandbox.Limits().processes)
    assert limits["Max data size"] == str(2 << 30)
    monkeypatch.setenv("LUTLM_SANDBOX", "maybe")
    with pytest.raises(ValueError, match="LUTLM_SANDBOX"):
        run_tool(["true"], cwd=tmp_path, timeout=5)


# ------------------------------------------------------------------ directive checks

FILE_READING = [
    ("asm", '.data\n.incbin "/etc/os-release", 0, 64\n'),
    ("asm", '.include "/etc/passwd"\n'),
    ("asm", 'f:  .INCBIN "/dev/zero"\n'),
    ("asm", 'x: ret; .incbin "/etc/hostname"\n'),
    ("ir", 'module asm ".incbin \\22/etc/passwd\\22"\n'),
    ("ir", 'module asm "\\2Eincbin \\22/etc/passwd\\22"\n'),
    ("c", '#include "/etc/passwd"\nint main(void){return 0;}\n'),
    ("c", "#include <../../../../etc/passwd>\n"),
    ("c", '#define F "/etc/passwd"\n#include F\n'),
    ("c", '  #  include_next "/etc/shadow"\n'),
    ("c", '#inc\\\nlude "/etc/passwd"\n'),
    ("c", '%:include "/etc/passwd"\n'),
    ("c", '#embed "data.bin"\n'),
    ("c", 'int main(void){ __asm__(".incbin \\"/etc/passwd\\""); }\n'),
    ("c", 'int main(void){ __asm__(".inc" "bin \\"/etc/passwd\\""); }\n'),
    ("c", 'int main(void){ __asm__("\\x2eincbin \\"/etc/passwd\\""); }\n'),
]


@pytest.mark.parametrize(("language", "text"), FILE_READING)
def test_file_reading_directives_are_refused(language, text):
    with pytest.raises(UnsafeInput, match="the input"):
        check_source(text, language, "the input")


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("c", '#include <stdio.h>\n#include "util.h"\n#include <sys/types.h> // ok\n'),
        ("asm", ".text\n.globl f\nf:\n\tmovl $1, %eax\n\tret\n"),
        ("ir", 'module asm ".globl g"\ndefine i32 @f() {\n  ret i32 0\n}\n'),
    ],
)
def test_ordinary_sources_pass(language, text):
    check_source(text, language, "the input")


def test_verifiers_refuse_user_input_and_fail_candidates(tmp_path):
    require("bwrap", "gcc", "opt", "llc", "llvm-size", "llvm-mc")
    from lutlm.tasks.disasm import att_to_intel
    from lutlm.tasks.verify_asm import verify_transpiled
    from lutlm.tasks.verify_c import verify_c_function
    from lutlm.tasks.verify_ir import ir_stats

    driver = '#include <stdio.h>\nint f(void);\nint main(void){ printf("%d\\n", f()); }\n'
    good = ".text\n.globl f\nf:\n\tmovl $1, %eax\n\tret\n"
    evil = '.data\n.incbin "/etc/os-release"\n' + good
    # The model's answer reads a file: the answer fails, with the reason.
    v = verify_transpiled(evil, "x86_64", [driver], reference_asm=good)
    assert v.status == "failed" and ".incbin" in v.message
    v = verify_c_function('#include "/etc/passwd"\nint f(void){return 1;}\n', [driver])
    assert v.status == "failed" and "#include" in v.message
    # The user's own input reads a file: a ValueError (a 400 from the server).
    with pytest.raises(UnsafeInput):
        verify_transpiled(good, "x86_64", [driver], reference_asm=evil)
    with pytest.raises(UnsafeInput):
        verify_c_function("int f(void){return 1;}\n", ['#include "/etc/passwd"\n' + driver])
    with pytest.raises(UnsafeInput):
        ir_stats('module asm ".incbin \\22/etc/passwd\\22"\n')
    with pytest.raises(UnsafeInput):
        att_to_intel('.include "/etc/passwd"\n')


def test_directive_check_runs_before_any_tool(tmp_path, monkeypatch):
    """.incbin "/dev/zero" made llvm-mc allocate for a minute; it must not start at all."""
    from lutlm.tasks import disasm

    def no_tools(*a, **k):
        raise AssertionError("a tool ran")

    monkeypatch.setattr(disasm, "run_tool", no_tools)
    t0 = time.monotonic()
    with pytest.raises(UnsafeInput):
        disasm.att_to_intel('.data\n.incbin "/dev/zero"\n')
    assert time.monotonic() - t0 < 1
