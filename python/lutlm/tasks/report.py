"""The verdict a task's verifier gives on one model answer, and how the verifiers that run
test drivers (verify_c, verify_asm) sum their per-test results into one."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["verified", "failed", "unverified"]


@dataclass
class Verification:
    """What a real compiler, assembler or emulator said about an answer.

    status is "verified" (the tools accepted it and the tests passed), "failed" (a tool
    rejected it or a test failed; message holds the tool's own words) or "unverified"
    (the answer could not be checked: a tool is missing, named in `tool`, or no tests
    were given). details holds task-specific measurements (sizes, counts, outputs).
    """

    status: Status
    message: str = ""
    tool: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "verified"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def tally(results: list[dict], details: dict[str, Any]) -> list[dict]:
    """Record how many of the per-test `results` passed in details["total"] and
    details["passed"].

    Returns:
        The entries whose status is not "passed", in test order.
    """
    failed = [r for r in results if r["status"] != "passed"]
    details["total"] = len(results)
    details["passed"] = len(results) - len(failed)
    return failed


def tests_failed(
    failed: list[dict], total: int, what: str, *, tool: str | None, details: dict[str, Any]
) -> Verification:
    """The verdict on an answer that failed tests, told by its first failing test.

    Args:
        failed: the failing entries (tally's result); the first is named.
        total: how many tests ran.
        what: how that test failed, worded to follow "test <name> ".

    Returns:
        A "failed" Verification.
    """
    return Verification(
        "failed",
        f"{len(failed)} of {total} tests failed; test {failed[0]['name']} {what}",
        tool=tool,
        details=details,
    )
