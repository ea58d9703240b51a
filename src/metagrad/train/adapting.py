"""``metagrad adapt``: adapt a model to a folder of classes and classify image files.

``--support DIR`` holds one sub-folder per class (its name is the class name) of one or more
images; ``--query`` takes image files and folders of them. Every query image gets a row: its
path as given on the command line (joined with the file name for a folder's images), the
predicted class and the probability of every class, classes in sorted folder-name order (the
head's units). The rows go to a CSV file (``--out``) and, shortened, to the terminal.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from metagrad.algorithms.head_init import HeadInit
from metagrad.data.image_folders import query_files, read_image, support_classes
from metagrad.errors import UsageError
from metagrad.train.adapted import Adapted
from metagrad.train.deploy import load
from metagrad.train.io import atomic_write_text

TABLE_ROWS = 20  # query rows shown on the terminal; the CSV has them all


@dataclass(frozen=True)
class Report:
    """What one ``metagrad adapt`` gave.

    Attributes:
        adapted: the adapted model (``--save-adapted`` writes it).
        rows: per query image: the path shown, the predicted class, each class's probability.
        support_images: how many support images it adapted to (0: an adapted model given).
    """

    adapted: Adapted
    rows: list[tuple[str, str, list[float]]]
    support_images: int

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.adapted.classes]


def adapt_folders(
    model: str,
    support: Path | None,
    queries: Sequence[str],
    steps: int | None = None,
    head: HeadInit | None = None,
) -> Report:
    """Load ``model``, adapt it to the classes of ``support`` and classify ``queries``.

    ``model`` may be an adapted model (``--save-adapted``'s file): it then classifies the
    queries as it is, with no ``support``.

    Raises:
        UsageError: anything wrong with the model, the folders or the images (one line each:
            see :mod:`metagrad.data.image_folders`).
    """
    loaded = load(model)
    files = query_files(queries)  # a missing query path fails before the adaptation runs
    if isinstance(loaded, Adapted):
        if support is not None or steps is not None or head is not None:
            raise UsageError(
                f"{model} is already adapted (to {', '.join(map(str, loaded.classes or ()))}): "
                "drop --support, --steps and --head to classify with it, or give the run "
                "directory it came from to adapt to new classes"
            )
        adapted, count = loaded, 0
    else:
        if support is None:
            raise UsageError(
                f"give --support DIR (one sub-folder of images per class) to adapt {model}"
            )
        if not loaded.classification:
            raise UsageError(f"{model} is a regression model: metagrad adapt classifies images")
        classes = support_classes(support)
        paths = [p for images in classes.values() for p in images]
        labels = [name for name, images in classes.items() for _ in images]
        adapted = loaded.adapt([read_image(p) for p in paths], labels, steps, head=head)
        count = len(paths)
    prediction = adapted.predict([read_image(p) for _, p in files])
    probabilities = prediction.probabilities.tolist()
    rows = [
        (shown, str(predicted), p)
        for (shown, _), predicted, p in zip(files, prediction.classes, probabilities)
    ]
    return Report(adapted, rows, count)


def predictions_csv(report: Report) -> str:
    """The CSV text: ``path,predicted_class,p_<class>,...``, probabilities with 6 decimals."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "predicted_class", *(f"p_{c}" for c in report.classes)])
    for shown, predicted, probabilities in report.rows:
        writer.writerow([shown, predicted, *(f"{p:.6f}" for p in probabilities)])
    return text.getvalue()


def write_predictions(path: Path, report: Report) -> None:
    """Write :func:`predictions_csv` to ``path`` atomically."""
    if path.is_dir() or not path.parent.is_dir():
        where = "is a folder" if path.is_dir() else f"is in {path.parent}, which does not exist"
        raise UsageError(f"cannot write the predictions to {path}: it {where}")
    atomic_write_text(path, predictions_csv(report))


def summary(report: Report) -> str:
    """The terminal's lines: what was adapted, then a table of (at most 20) query rows."""
    a = report.adapted
    steps = a.about.get("inner_steps")
    how = f"{steps} inner step{'' if steps == 1 else 's'}, head {a.about.get('head')}"
    head = (
        f"adapted {a.about.get('source', 'the model')} to {len(report.classes)} classes "
        f"from {report.support_images} images ({how}); BatchNorm: {a.batch_norm} statistics"
        if report.support_images
        else f"adapted model {a.about.get('source', '')} ({len(report.classes)} classes)"
    )
    shown = report.rows[:TABLE_ROWS]
    width = max([len("path"), *(len(r[0]) for r in shown)])
    name = max([len("predicted"), *(len(r[1]) for r in shown)])
    lines = [head, f"{'path':<{width}}  {'predicted':<{name}}  probability"]
    for path, predicted, probabilities in shown:
        lines.append(f"{path:<{width}}  {predicted:<{name}}  {max(probabilities):.3f}")
    if len(report.rows) > len(shown):
        lines.append(f"... and {len(report.rows) - len(shown)} more (all in --out FILE)")
    return "\n".join(lines)
