"""A run's typed messages: progress while it trains, its result, and how it ended (in memory and as JSON)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

ENDS = ("done", "failed", "cancelled", "interrupted")  # the statuses a run can end with


class _Plain:
    """A dataclass of plain JSON values: to a dict and back (keys it doesn't know are ignored)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclass(frozen=True)
class Progress(_Plain):
    """A snapshot while a run trains: every few iterations (a step) and at each eval point, which adds
    `test_acc` (accuracy on the eval subset) and averages `loss` since the last eval point."""
    iter: int
    iters: int
    loss: float
    images_per_s: float
    elapsed: float
    eta: float
    test_acc: float | None = None

    @property
    def is_eval(self) -> bool:
        return self.test_acc is not None


@dataclass(frozen=True)
class RunResult(_Plain):
    """What a trained run records: whole-test-set accuracy, time, speed, environment, evaluation, checkpoint."""
    test_acc: float
    seconds: float
    images_per_s: float
    env: dict = field(default_factory=dict)
    evaluation: dict = field(default_factory=dict)
    checkpoint: str | None = None
    message: str = ""


@dataclass(frozen=True)
class RunEnd:
    """How one run ended: a status of ENDS, a one-line message, and the result of a run that is done."""
    run_id: str
    status: str
    message: str = ""
    result: RunResult | None = None

    def __post_init__(self):
        if self.status not in ENDS:
            raise ValueError(f"a run ends as one of {', '.join(ENDS)}, not {self.status!r}")
        if (self.status == "done") != (self.result is not None):
            raise ValueError("a run that is done has a result, and only such a run")

    def to_dict(self) -> dict:
        return {"run_id": self.run_id, "status": self.status, "message": self.message,
                "result": self.result.to_dict() if self.result else None}

    @classmethod
    def from_dict(cls, d: dict) -> RunEnd:
        return cls(d["run_id"], d["status"], d.get("message", ""),
                   RunResult.from_dict(d["result"]) if d.get("result") else None)
