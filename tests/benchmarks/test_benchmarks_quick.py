"""Every benchmark script runs in --quick mode and prints its ratio table, so none can rot;
benchmarks/gpu.sh is executable, runs them all and fails loudly."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import ENV, ROOT, group_options

BENCHMARKS = ROOT / "benchmarks"
GPU_SH = BENCHMARKS / "gpu.sh"
NUMBER = r"[0-9.]+(?:e[+-]?\d+)?"


def run_quick(script: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--quick"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def positive(text: str) -> float:
    value = float(text)
    assert math.isfinite(value) and value > 0, text
    return value


def assert_ratio_of_rounded(
    ratio: float, numerator: float, denominator: float, value_unit: float, ratio_unit: float
) -> None:
    """``ratio`` was printed to ``ratio_unit`` from the quotient of two values printed to
    ``value_unit``: it lies in the interval that rounding both values and the ratio allows
    (a fixed relative tolerance is too loose for large values and too tight for values of a
    few units, such as the quick modes' sub-second times)."""
    half, ratio_half = value_unit / 2, ratio_unit / 2
    lowest = (numerator - half) / (denominator + half) - ratio_half
    highest = (numerator + half) / (denominator - half) + ratio_half
    assert lowest <= ratio <= highest, (ratio, numerator, denominator)


def check_harness_overhead(out: str) -> None:
    table = out[out.index("Harness overhead") :].split("\n\n")[0].splitlines()
    assert re.fullmatch(r"loop\s+ms/step\s+ratio", table[1])
    rows = {line.split()[0]: line.split()[1:] for line in table[2:]}
    assert set(rows) == {"bare", "lightning"}
    bare_ms, bare_ratio = map(positive, rows["bare"])
    lightning_ms, lightning_ratio = map(positive, rows["lightning"])
    assert bare_ratio == 1.0
    assert_ratio_of_rounded(lightning_ratio, lightning_ms, bare_ms, 0.01, 0.001)


def check_upsamplers(out: str) -> None:
    out = out[out.index("Upsamplers") :]
    tables = [t for t in out.split("\n\n") if t.startswith("Upsamplers")]
    assert len(tables) == 2  # the wide and the decoder-realistic shape
    for table in tables:
        lines = table.splitlines()
        assert lines[1].split() == [
            "upsampler",
            "fwd",
            "ms",
            "ratio",
            "fwd+bwd",
            "ms",
            "ratio",
            "peak",
            "MiB",
            "ratio",
        ]
        rows = {line.split()[0]: line.split()[1:] for line in lines[3:]}
        assert set(rows) == {"bilinear+conv", *group_options("upsampler")}
        reference = rows["bilinear+conv"]
        assert [reference[i] for i in (1, 3, 5)] == ["1", "1", "1"]
        for name, cells in rows.items():
            if cells[0] == "skipped:":
                continue
            for value, ratio, ref in zip(cells[0::2], cells[1::2], reference[0::2], strict=True):
                # The ratio column is the value divided by the reference's (3 significant digits;
                # values and reference are themselves rounded to 3 digits).
                assert positive(ratio) == pytest.approx(positive(value) / float(ref), rel=0.02), (
                    name
                )


def check_data_throughput(out: str) -> None:
    match = re.search(rf"ratio delivery / consumption\s+({NUMBER}) x", out)
    assert match, out
    positive(match.group(1))


def check_converged_run(out: str) -> None:
    table = out[out.index("Converged run") :].splitlines()
    assert table[1].split()[-1] == "ratio"
    rows = {line.split()[0]: line.split()[1:] for line in table[2:4]}
    assert set(rows) == {"before", "after"}
    to_plateau = {name: positive(cells[4]) for name, cells in rows.items()}
    assert float(rows["before"][-1]) == 1.0
    # Seconds are printed to 0.1 s and the ratio to 0.01.
    ratio = positive(rows["after"][-1])
    assert_ratio_of_rounded(ratio, to_plateau["after"], to_plateau["before"], 0.1, 0.01)
    for cells in rows.values():
        assert cells[2] in ("True", "False", "None")


def check_deploy(out: str) -> None:
    tables = [t for t in out.split("\n\n") if t.startswith("Deploy")]
    # The upsampler alone at the quick shape, then the whole segmenter.
    assert [t.split(":")[1].split()[0] for t in tables] == ["upsampler", "whole"]
    for table in tables:
        lines = table.splitlines()
        assert lines[1].split() == ["upsampler", "eager", "ms", "ORT", "ms", "ratio"]
        rows = {line.split()[0]: line.split()[1:] for line in lines[3:]}
        assert set(rows) == {"resize_conv", "carafe"}
        for name, cells in rows.items():
            eager, ort, ratio = map(positive, cells)
            # Times are printed to 3 significant digits.
            assert ratio == pytest.approx(ort / eager, rel=0.05), name


CHECKS = {
    "converged_run.py": check_converged_run,
    "deploy.py": check_deploy,
    "harness_overhead.py": check_harness_overhead,
    "upsamplers.py": check_upsamplers,
    "data_throughput.py": check_data_throughput,
}


# The scripts gpu.sh runs are checked on its tables file (below), not run a second time here.
RUN_BY_GPU_SH = set(re.findall(r"benchmarks/(\w+\.py)", GPU_SH.read_text()))


def check_output(script: str, out: str) -> None:
    check = CHECKS.get(script)
    if check is None:
        # Any other benchmark (carafe_op.py): a ratio column, titled "ratio" or "A/B" (t/naive).
        assert re.search(r"\bratio\b|\b[a-z]+/[a-z]+\b", out, re.IGNORECASE), out[-3000:]
    else:
        check(out)


@pytest.mark.slow
@pytest.mark.parametrize(
    "script", sorted(p.name for p in BENCHMARKS.glob("*.py") if p.name not in RUN_BY_GPU_SH)
)
def test_quick_mode_exits_0_and_prints_ratio_column(script):
    check_output(script, run_quick(script))


def test_gpu_sh_is_executable_bash():
    assert os.access(GPU_SH, os.X_OK)
    subprocess.run(["bash", "-n", str(GPU_SH)], check=True)


def test_gpu_sh_fails_when_a_benchmark_times_out(tmp_path):
    tables = tmp_path / "tables.txt"
    proc = subprocess.run(
        [str(GPU_SH), str(tables)],
        env={**ENV, "DEVICE": "cpu", "QUICK": "1", "STEP_LIMIT_S": "0.01"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 124, proc.stderr
    assert "harness_overhead failed" in proc.stderr
    assert (tmp_path / "logs" / "harness_overhead.log").is_file()


@pytest.mark.slow
def test_gpu_sh_collects_every_table(tmp_path):
    """The CPU smoke mode of gpu.sh: every benchmark's table lands in the tables file. The
    script's per-step cap (STEP_LIMIT_S, sized for a GPU lease) is lifted here: on a slow or
    busy 2-core CPU a quick step can take minutes, which says nothing about the script."""
    tables = tmp_path / "tables.txt"
    proc = subprocess.run(
        [str(GPU_SH), str(tables)],
        env={**ENV, "DEVICE": "cpu", "QUICK": "1", "STEP_LIMIT_S": "600"},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = tables.read_text()
    sections = {
        name: text[text.index(f"## {name.removesuffix('.py')}") :] for name in RUN_BY_GPU_SH
    }
    for script, section in sections.items():
        check_output(script, section)
