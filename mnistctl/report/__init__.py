"""Rendering: what the core computed, shown on stdout and stderr. It computes nothing and writes no files.

- ``console``: the two consoles; results, JSON, plain text, log lines, the one-line errors
- ``text``: names and messages escaped so that nothing from outside can split a line or drive the terminal
- ``progress``: download and training bars, a line per epoch, JSON epochs, counting bars
- ``tables``: the tables and summaries of download, info, train, eval and compare-optimizers
- ``predictions``: predict's lines, JSON lines, panels and previews

The names below are the ones the command line uses, so that a command reads ``report.log(…)`` whichever
module a function lives in.
"""

from mnistctl.report.console import is_terminal, log, path_error, print_json, print_text, show_result
from mnistctl.report.predictions import print_predictions
from mnistctl.report.progress import comparison_callbacks, counting, download_progress, train_callbacks
from mnistctl.report.tables import (
    comparison_table,
    comparison_title,
    download_summary,
    download_table,
    epochs_table,
    eval_report,
    info_tables,
    train_summary,
)

__all__ = [
    "comparison_callbacks",
    "comparison_table",
    "comparison_title",
    "counting",
    "download_progress",
    "download_summary",
    "download_table",
    "epochs_table",
    "eval_report",
    "info_tables",
    "is_terminal",
    "log",
    "path_error",
    "print_json",
    "print_predictions",
    "print_text",
    "show_result",
    "train_callbacks",
    "train_summary",
]
