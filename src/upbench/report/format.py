"""How numbers are written in the tables, the summary and the profiler's printout."""

from __future__ import annotations

PERCENT_FACTOR = 100.0  # metrics in [0, 1] are shown in %, as papers quote mIoU


def format_count(value: float | None) -> str:
    """1234567 -> '1.23 M' (SI prefixes, 3 significant digits); '-' for no value."""
    if value is None:
        return "-"
    for prefix, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.3g} {prefix}"
    return f"{value:.3g}"


def format_ms(value: float | None) -> str:
    """A latency in ms, 3 significant digits."""
    return "-" if value is None else f"{value:.3g}"


def format_mib(value: int | None) -> str:
    """A byte count in MiB, 3 significant digits."""
    return "-" if value is None else f"{value / 2**20:.3g}"


def format_metric(value: float, percent: bool, digits: tuple[int, int]) -> str:
    """A metric value, x100 if ``percent``; ``digits`` are the decimals of (percent, other)."""
    if percent:
        return f"{value * PERCENT_FACTOR:.{digits[0]}f}"
    return f"{value:.{digits[1]}f}"


def format_mean(
    mean: float, spread: float | None, percent: bool, digits: tuple[int, int], latex: bool = False
) -> str:
    """``mean ± spread`` (``$mean \\pm spread$`` for LaTeX), or the mean alone."""
    text = format_metric(mean, percent, digits)
    if spread is not None:
        text += (r" \pm " if latex else " ± ") + format_metric(spread, percent, digits)
    return f"${text}$" if latex else text
