"""The verdict a task's verifier gives on one model answer."""

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
