"""Show training metrics: a PNG report written after training, and a TensorBoard sink.

``write_training_report`` draws one panel per metric found in ``training_statistics.json``:
loss, ``rewards/accuracies`` and ``rewards/margins`` for the preference methods, and reward and
completion length for GRPO, each with its train and held-out (``eval/``) curve over optimizer
steps. ``TensorBoardSink`` receives the same records as the trainer logs them, through the
trainer's ``metric_sinks``, when the config sets ``trainer.report_to: [tensorboard]``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Sequence

from pyalign.errors import ConfigError

logger = logging.getLogger(__name__)

REPORT_FILE = "training_report.png"
TENSORBOARD_DIR = "tensorboard"
REPORT_TO_CHOICES = ("tensorboard",)

# Each panel is (title, metric names tried in order); the first name found in the records is
# drawn. GRPO runs log rewards and completion lengths under one of the listed names.
PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("loss", ("loss",)),
    ("rewards/accuracies", ("rewards/accuracies",)),
    ("rewards/margins", ("rewards/margins",)),
    ("reward", ("reward", "rewards/mean", "reward/mean")),
    ("completion length", ("completion_length", "completions/mean_length")),
)
PANEL_COLUMNS = 3
PANEL_SIZE_INCHES = (4.2, 3.0)
DPI = 100

MetricSink = Callable[[str, dict], None]


def write_training_report(
    statistics: dict[str, Any], path: str | Path, title: str = "training report"
) -> Path:
    """Draw the train and held-out curves of a run into the PNG file ``path``, and return it."""
    import matplotlib

    matplotlib.use("Agg")  # No display is needed, and none may exist.
    import matplotlib.pyplot as plt

    train = statistics.get("train") or []
    evaluation = statistics.get("eval") or []
    panels = report_panels(statistics)

    columns = min(PANEL_COLUMNS, max(1, len(panels)))
    rows = max(1, math.ceil(len(panels) / columns))
    figure, axes = plt.subplots(
        rows,
        columns,
        figsize=(PANEL_SIZE_INCHES[0] * columns, PANEL_SIZE_INCHES[1] * rows),
        squeeze=False,
    )
    figure.suptitle(title)
    for index, axis in enumerate(axes.flat):
        if index >= len(panels):
            axis.set_axis_off()
            continue
        panel_title, name = panels[index]
        _draw_panel(axis, panel_title, name, train, evaluation)
    if not panels:
        axes[0][0].text(0.5, 0.5, "no metrics were logged", ha="center", va="center")

    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    logger.info("wrote the training report %s (%d panels)", path, len(panels))
    return path


def report_panels(statistics: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the ``(title, metric)`` of each panel that the report draws for ``statistics``."""
    train = statistics.get("train") or []
    evaluation = statistics.get("eval") or []
    panels = []
    for title, candidates in PANELS:
        name = _first_logged(candidates, train, evaluation)
        if name is not None:
            panels.append((title, name))
    return panels


def _first_logged(
    candidates: Sequence[str], train: list[dict], evaluation: list[dict]
) -> str | None:
    for name in candidates:
        if any(name in record for record in train):
            return name
        if any(f"eval/{name}" in record for record in evaluation):
            return name
    return None


def _draw_panel(axis, title: str, name: str, train: list[dict], evaluation: list[dict]) -> None:
    from matplotlib.ticker import MaxNLocator

    for label, records, key in (("train", train, name), ("held-out", evaluation, f"eval/{name}")):
        points = [(record["step"], record[key]) for record in records if key in record]
        if points:
            steps, values = zip(*points)
            axis.plot(steps, values, marker="o", markersize=3, label=label)
    axis.set_title(title)
    axis.set_xlabel("optimizer step")
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    axis.legend()


class TensorBoardSink:
    """A metric sink that writes every logged record as TensorBoard scalars.

    Train records are written under ``train/<name>``; held-out records keep their ``eval/``
    names. The step is the record's ``step``. Needs the ``tensorboard`` package.
    """

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    def __call__(self, split: str, record: dict) -> None:
        step = record.get("step")
        for name, value in record.items():
            if name in ("step", "epoch") or not isinstance(value, (int, float)):
                continue
            tag = name if split == "eval" or name.startswith(f"{split}/") else f"{split}/{name}"
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def check_report_to(report_to: Sequence[str] | None) -> list[str]:
    """Validate ``trainer.report_to`` and return it as a list; raise before anything loads."""
    report_to = list(report_to or [])
    for name in report_to:
        if name not in REPORT_TO_CHOICES:
            allowed = ", ".join(repr(choice) for choice in REPORT_TO_CHOICES)
            raise ConfigError(
                f"config key 'trainer.report_to' has invalid value {name!r}; expected a list of "
                f"{allowed}"
            )
    if "tensorboard" in report_to:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ConfigError(
                "config key 'trainer.report_to' lists 'tensorboard', but the tensorboard package "
                "is not installed; run pip install tensorboard, or remove it from report_to"
            ) from None
    return report_to


def metric_sinks(report_to: Sequence[str] | None, output_dir: Path) -> list[MetricSink]:
    """Build the metric sinks that ``trainer.report_to`` lists, writing under ``output_dir``."""
    sinks: list[MetricSink] = []
    if "tensorboard" in check_report_to(report_to):
        sink = TensorBoardSink(output_dir / TENSORBOARD_DIR)
        logger.info("writing TensorBoard logs to %s", sink.log_dir)
        sinks.append(sink)
    return sinks


def close_metric_sinks(sinks: Sequence[MetricSink]) -> None:
    """Close every sink that has a ``close`` method, such as the TensorBoard writer."""
    for sink in sinks:
        close = getattr(sink, "close", None)
        if close is not None:
            close()
