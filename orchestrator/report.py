"""Stage records and the campaign report (`report.json`, `fid_vs_steps.png`)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workers.checkpoint import write_atomic


@dataclass(frozen=True)
class TeacherResult:
    steps: int
    fid: float
    train_seconds: float
    final_loss: float
    checkpoint: str


@dataclass(frozen=True)
class RoundResult:
    round: int
    steps: int
    fid: float
    ddim_fid: float
    train_seconds: float
    final_loss: float
    updates: int
    checkpoint: str
    losses: list[tuple[int, float]] = field(default_factory=list)


class StageRecord:
    """A finished stage's outputs as JSON, written atomically after its checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any] | None:
        if not self.path.exists():
            return None
        data: dict[str, Any] = json.loads(self.path.read_text())
        return data

    def write(self, result: Any) -> None:
        write_atomic(self.path, json.dumps(dataclasses.asdict(result), indent=2).encode())


def write_report(
    out: Path,
    *,
    dataset: str,
    features: str,
    samples: int,
    teacher: TeacherResult,
    rounds: list[RoundResult],
) -> dict[str, Any]:
    report = {
        "dataset": dataset,
        "fid_features": features,
        "fid_samples": samples,
        "teacher": dataclasses.asdict(teacher),
        "rounds": [
            {k: v for k, v in dataclasses.asdict(r).items() if k != "losses"} for r in rounds
        ],
    }
    write_atomic(out / "report.json", json.dumps(report, indent=2).encode())
    plot_fid_vs_steps(out / "fid_vs_steps.png", report)
    return report


def plot_fid_vs_steps(path: Path, report: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = report["teacher"]
    rounds = sorted(report["rounds"], key=lambda r: r["steps"])
    steps = [r["steps"] for r in rounds] + [t["steps"]]
    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    ax.plot(steps, [r["fid"] for r in rounds] + [t["fid"]], "o-", label="progressive distillation")
    ax.plot(steps, [r["ddim_fid"] for r in rounds] + [t["fid"]], "s--", label="DDIM (teacher)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(steps, [str(s) for s in steps])
    ax.set_xlabel("sampling steps")
    ax.set_ylabel(f"FID ({report['fid_samples']} samples)")
    ax.set_title(f"{report['dataset']} — {report['fid_features']}", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
