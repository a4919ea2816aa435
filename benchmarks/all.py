"""`make bench`: every benchmark in turn, one after another on a quiet machine, then their goals together.

Each benchmark runs in its own process and prints as it goes; the lines starting with
`GOAL` (a measured ratio against its goal) and `COMPARE` (the endpoint backends side by side)
are repeated at the end under the CPU they were measured on; a full run also writes them to
docs/benchmarks.md (benchmarks/results_page.py).
Usage: python -m benchmarks.all [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time

from benchmarks import results_page
from benchmarks.common import REPO, environment, machine_line
from dogbreed.serving.hardware import cpu_has_fast_bf16
from dogbreed.serving.int8 import fast_int8_cpu

# name -> whether it takes --quick (hostile_requests is small already)
BENCHMARKS = {"training_speed": True, "extraction": True, "finetune_input": True, "serving_latency": True,
              "serving_backends": True, "int8_serving": True, "hostile_requests": False}  # fmt: skip
# Extra arguments: int8_serving records its served figures where `deploy up` prices from (a full run only).
ARGUMENTS = {"int8_serving": ["--write-throughput", "deploy/throughput.json"]}
# Lines repeated in the summary: a goal met or missed, and a comparison with no goal of its own.
SUMMARY_PREFIXES = ("GOAL ", "COMPARE ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny data and few requests: a smoke test")
    args = parser.parse_args()
    started = time.perf_counter()
    goals = []
    for name, takes_quick in BENCHMARKS.items():
        print(f"\n######## benchmarks.{name}", flush=True)
        command = [sys.executable, "-m", f"benchmarks.{name}", *(["--quick"] if args.quick and takes_quick else [])]
        command += [] if args.quick else ARGUMENTS.get(name, [])
        # Each benchmark picks its allocator: inheriting the tuned one (no heap trimming) kept the
        # hostile-request server's burst in its RSS and timed the servers unlike `deploy serve`.
        process = subprocess.Popen(command, cwd=REPO, env=environment(None), stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith(SUMMARY_PREFIXES):
                goals.append(line.rstrip())
        if process.wait() != 0:
            raise SystemExit(f"benchmarks.{name} failed with exit code {process.returncode}")
    minutes = (time.perf_counter() - started) / 60
    machine = machine_line("bf16" if cpu_has_fast_bf16() else "fp32")
    print(f"\n######## summary ({minutes:.0f} min)")
    print(machine)
    print("\n".join(goals))
    if not args.quick:
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        kernels = fast_int8_cpu() or "AVX2 only (no VNNI/AMX)"
        (REPO / results_page.PAGE).write_text(results_page.render(goals, machine, kernels, when, minutes))
        print(f"wrote {results_page.PAGE}")


if __name__ == "__main__":
    main()
