"""Meta-testing: per-step query metrics with 95% intervals over fixed test tasks."""

from metagrad.evaluate.protocol import EvalResult, Summary, evaluate, summarize

__all__ = ["EvalResult", "Summary", "evaluate", "summarize"]
