"""Start-up benchmark: command-line start times as a ratio to ``python -c "import lightning"``.

Absolute start times depend on the machine and on whatever else runs on it, so every command is
timed in the same run as the reference, in interleaved rounds (reference, then each command),
and reported as the median over the rounds together with the median of the per-round ratios.

Example::

    OMP_NUM_THREADS=1 python benchmarks/startup.py --repeats 7 --json startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Any

REFERENCE = ("import lightning", [sys.executable, "-c", "import lightning"])
COMMANDS = {
    "medllama-fusion --help": [sys.executable, "-m", "medllama_fusion", "--help"],
    "medllama-fusion fit --help": [sys.executable, "-m", "medllama_fusion", "fit", "--help"],
    "python -m medllama_fusion.configs": [sys.executable, "-m", "medllama_fusion.configs"],
    "import medllama_fusion": [sys.executable, "-c", "import medllama_fusion"],
}


def time_command(command: list[str]) -> float:
    """Run ``command`` once (output discarded) and return its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def measure(repeats: int) -> dict[str, Any]:
    """Time the reference and each command ``repeats`` times in interleaved rounds.

    Args:
        repeats: Number of rounds.

    Returns:
        ``{"reference": {...}, "commands": {name: {...}}}`` with the seconds of each round,
        their median and, for the commands, the per-round ratios to the reference and their median.
    """
    for command in [REFERENCE[1], *COMMANDS.values()]:  # warm the file cache once
        time_command(command)
    reference: list[float] = []
    seconds: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(repeats):
        reference.append(time_command(REFERENCE[1]))
        for name, command in COMMANDS.items():
            seconds[name].append(time_command(command))
    commands = {
        name: {
            "seconds": values,
            "median_s": statistics.median(values),
            "ratios": [v / r for v, r in zip(values, reference, strict=True)],
            "median_ratio": statistics.median(
                v / r for v, r in zip(values, reference, strict=True)
            ),
        }
        for name, values in seconds.items()
    }
    return {
        "reference": {
            "command": REFERENCE[0],
            "seconds": reference,
            "median_s": statistics.median(reference),
        },
        "commands": commands,
        "repeats": repeats,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def format_table(result: dict[str, Any]) -> str:
    """Render the result as a Markdown table."""
    ref = result["reference"]
    lines = [
        f"| command | median s | ratio to `{ref['command']}` |",
        "|---|---:|---:|",
        f'| `python -c "{ref["command"]}"` (reference) | {ref["median_s"]:.2f} | 1.00 |',
    ]
    for name, row in result["commands"].items():
        lines.append(f"| `{name}` | {row['median_s']:.2f} | {row['median_ratio']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table and optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--json", help="write the raw timings to this file")
    args = parser.parse_args(argv)
    result = measure(args.repeats)
    print(format_table(result))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
