"""Per-step metrics: ``<run>/metrics.csv`` and TensorBoard events in ``<run>/tensorboard``.

On resume from step ``s`` the rows after ``s`` (written by the interrupted run after its last
checkpoint) are dropped, so the CSV reads as one uninterrupted run.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path


class MetricsLog:
    """Append ``{"step": int, name: float, ...}`` rows; a no-op when ``enabled`` is False."""

    def __init__(self, run_dir: str | Path, *, resume_step: int, enabled: bool = True,
                 tensorboard: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.csv"
        self.header: list[str] = []
        self.writer = None
        if not enabled:
            return
        rows: list[dict] = []
        if resume_step > 0 and self.path.is_file():
            with open(self.path, newline="") as handle:
                reader = csv.DictReader(handle)
                self.header = list(reader.fieldnames or [])
                rows = [r for r in reader if r.get("step") and int(r["step"]) <= resume_step]
        self._rewrite(rows)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: CSV only
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"),
                                            purge_step=resume_step + 1 if resume_step > 0 else None)

    def _rewrite(self, rows: list[dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as handle:
            if self.header:
                writer = csv.DictWriter(handle, fieldnames=self.header, restval="")
                writer.writeheader()
                writer.writerows(rows)
        tmp.replace(self.path)

    def log(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        row = {"step": step, **{k: (float(v) if not isinstance(v, str) else v) for k, v in values.items()}}
        new = [k for k in row if k not in self.header]
        if new:  # a metric that appeared later (e.g. the GAN loss once it starts): widen the file
            with open(self.path, newline="") as handle:
                old_rows = list(csv.DictReader(handle)) if self.header else []
            self.header += new
            self._rewrite(old_rows)
        with open(self.path, "a", newline="") as handle:
            # repr keeps every bit of a float, so two runs can be compared exactly
            csv.DictWriter(handle, fieldnames=self.header, restval="").writerow(
                {k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(key, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of ``<run>/metrics.csv`` as floats (``step`` as int); empty cells are dropped."""
    path = Path(run_dir) / "metrics.csv"
    with open(path, newline="") as handle:
        return [{k: (int(v) if k == "step" else float(v)) for k, v in row.items() if v != ""}
                for row in csv.DictReader(handle)]
