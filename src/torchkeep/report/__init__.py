"""Reports on finished (or running) runs: PNG plots and summary.md (`torchkeep report`), and the table
of runs in a directory (`torchkeep runs`). Plots need matplotlib: `pip install 'torchkeep[track]'`."""

from torchkeep.report.summary import RunSummary, list_runs, summarize_run
from torchkeep.report.write import Report, write_report

__all__ = ["Report", "RunSummary", "list_runs", "summarize_run", "write_report"]
