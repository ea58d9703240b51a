"""What a run reports while it trains: metrics.jsonl, TensorBoard events, progress.

On a terminal the progress is a bar with rate and ETA; otherwise (CI, ``nohup``, pipes) a plain
line every ``log_every`` steps, so logs stay readable.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from metagrad.train.io import append_jsonl, atomic_write_text, read_jsonl


def _eta(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class Monitor:
    """Writes metrics of a run to ``run_dir`` and shows progress.

    Args:
        run_dir: the run directory.
        total: the number of training steps of the run.
        start: the step the run starts (or resumes) from.
        tensorboard: also write TensorBoard event files under ``run_dir/tensorboard``.
    """

    def __init__(self, run_dir: Path, total: int, start: int, tensorboard: bool = True) -> None:
        self.path, self.total, self.start = run_dir / "metrics.jsonl", total, start
        self._truncate_after(start)
        self.t0, self.last_print = time.perf_counter(), 0.0
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, dynamic_ncols=True, unit="it")
        self.writer = _Events(run_dir / "tensorboard", purge_step=start) if tensorboard else None

    def _truncate_after(self, step: int) -> None:
        """Drop lines logged after ``step`` by an interrupted run, so a resumed run's log
        has every step once."""
        if self.path.exists():
            kept = [r for r in read_jsonl(self.path) if r.get("step", 0) <= step]
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def log(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        """Record ``metrics`` of ``split`` ("train", "val") at ``step``."""
        append_jsonl(self.path, {"step": step, "split": split, **metrics})
        if self.writer is not None:
            for k, v in metrics.items():
                if isinstance(v, (int, float)):
                    self.writer.add_scalar(f"{split}/{k}", v, step)
            self.writer.flush()  # a kill loses no logged step
        if split == "val" or self.bar is None:
            self._print(step, split, metrics)

    def advance(self, step: int, loss: float) -> None:
        """Move the progress bar to ``step``."""
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix(loss=f"{loss:.4g}", refresh=False)  # tqdm refreshes on its own

    def _print(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        elapsed = time.perf_counter() - self.t0
        rate = (step - self.start) / elapsed if elapsed > 0 else 0.0
        eta = _eta((self.total - step) / rate) if rate > 0 else "?"
        shown = " ".join(f"{k} {v:.4g}" for k, v in metrics.items() if isinstance(v, float))
        line = f"[{split}] step {step}/{self.total} {shown} ({rate:.2f} it/s, ETA {eta})"
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def close(self, failing: bool = False) -> None:
        """Close the progress bar and the TensorBoard writer.

        Args:
            failing: the run is stopping on an error, whose message must stay the one line
                printed: a TensorBoard writer that cannot flush (the same full disk) is then
                closed quietly (``metrics.jsonl`` is the run's record).
        """
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                if not failing:
                    raise


class _Events:
    """TensorBoard scalars written synchronously to one event file.

    Not tensorboardX's ``SummaryWriter``: its writer thread dies on a full disk, after which its
    bounded queue blocks the run forever and its traceback breaks the one-line error. Here a
    failed write raises ``OSError`` in the run's own thread.

    Args:
        logdir: the directory of the event file (created if missing).
        purge_step: TensorBoard hides earlier runs' events from this step on (a resume's).
    """

    def __init__(self, logdir: Path, purge_step: int) -> None:
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event, SessionLog

        self._event = Event
        logdir.mkdir(parents=True, exist_ok=True)
        self._writer = EventsWriter(str(logdir / "events"))
        start = SessionLog(status=SessionLog.START)
        self._writer.write_event(Event(step=purge_step, wall_time=time.time(), session_log=start))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        from tensorboardX.summary import scalar

        event = self._event(wall_time=time.time(), step=step, summary=scalar(tag, value))
        self._writer.write_event(event)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
