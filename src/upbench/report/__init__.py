"""Result tables and figures from the ``results.json`` of finished (and unfinished) runs.

``python -m upbench.report RUN_DIR [RUN_DIR ...]`` - see :mod:`upbench.report.cli`.
"""

from upbench.report.cli import main, profile_upsamplers
from upbench.report.plots import prediction_grids, scatter_plots
from upbench.report.summary import summary_markdown
from upbench.report.table import (
    ReportTable,
    Stat,
    build_table,
    compare_cells,
    read_csv_cells,
    table_cells,
)

__all__ = [
    "ReportTable",
    "Stat",
    "build_table",
    "compare_cells",
    "main",
    "prediction_grids",
    "profile_upsamplers",
    "read_csv_cells",
    "scatter_plots",
    "summary_markdown",
    "table_cells",
]
