"""Experiment reports: results tables of finished runs (Table 1 layout) and the HTML page of ``attnkit report``."""

from .html import write_report
from .results import RunRecord, format_results_table, load_runs, method_label, results_table

__all__ = ["RunRecord", "format_results_table", "load_runs", "method_label", "results_table", "write_report"]
