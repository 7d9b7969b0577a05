"""Result tables and figures from the ``results.json`` of finished (and unfinished) runs.

``python -m upbench.report RUN_DIR [RUN_DIR ...]`` - see :mod:`upbench.report.cli`. The tables
are built in :mod:`~upbench.report.table` (with the statistics of :mod:`~upbench.report.stats`),
the at-a-glance view in :mod:`~upbench.report.summary`, the figures in
:mod:`~upbench.report.plots` and :mod:`~upbench.report.curves`. This package module imports
none of them, so that :mod:`upbench.report.format` can be used by the profiler without a cycle.
"""
