"""A doctor finding: severity, a stable code, where (episode/frame/joint or feature) and what is wrong.

Why a type: the report, the console summary and the exit code are all derived from the same list, and tests
assert on codes and messages rather than on formatted text.
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES: tuple[str, ...] = ("error", "warning", "info")


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning" | "info"
    code: str
    where: str
    message: str

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")

    def line(self) -> str:
        """The one-line console form: 'ERROR   code  where: message'."""
        return f"{self.severity.upper():<8s}{self.code}  {self.where}: {self.message}"

    def as_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "code": self.code, "where": self.where, "message": self.message}


def count(findings: list[Finding], severity: str) -> int:
    return sum(1 for f in findings if f.severity == severity)
