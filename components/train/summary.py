"""What ``dal train`` returns and writes to ``<output>/summary.json``: one typed record.

Rank 0 writes it, so a caller that launched ``torchrun`` (the KFP component, the DDP test) reads
the same record that an in-process caller gets from ``run(config)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from components.common import storage
from components.common.errors import DalError

SUMMARY_FILE = "summary.json"


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSummary:
    steps: int  # the step the run ended at (the budget, or where SIGTERM stopped it)
    resumed_from: str  # the checkpoint it continued from ("" when it started fresh)
    objective: str
    optimizer: str  # resolved ("auto" is never recorded)
    lr: float
    warmup_steps: int
    final: dict[str, float]  # the last logged window's metrics
    model_uri: str  # <output>/model.pt ("" on ranks other than 0)
    initial_model_uri: str  # <output>/initial.pt: the weights training started from
    mlflow_model_uri: str  # "" when untracked
    mlflow_run_id: str
    checkpoint: str  # the newest checkpoint
    eval_history: list[dict[str, float]]  # periodic evaluations, oldest first ([] when off)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "summary") -> TrainSummary:
        names = {f.name for f in dataclasses.fields(cls)}
        missing, unknown = names - data.keys(), data.keys() - names
        if missing or unknown:
            raise DalError(
                f"{where}: not a train summary (missing {sorted(missing)}, unknown {sorted(unknown)})"
            )
        return cls(**data)

    def write(self, output: str) -> None:
        storage.write_json(storage.join(output, SUMMARY_FILE), self.to_json())

    @classmethod
    def read(cls, output: str) -> TrainSummary:
        uri = storage.join(output, SUMMARY_FILE)
        return cls.from_json(storage.read_json(uri), uri)
