"""Memory: a worker's resident set size across 200 trials in one process.

Models, optimisers and batches of finished trials must be freed: RSS after trial 200 should
stay within 50 MB of RSS after trial 20. The study runs in a child process (so earlier
sections don't pollute it) on SQLite with the default search space, 1 epoch per trial. RSS is
sampled after every trial; the peak is the kernel's high-water mark (``VmHWM``), which also
catches what a trial held while it trained.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import Section, machine, table


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident set size (``VmRSS``) or its peak so far (``VmHWM``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(n_trials: int, *, quick: bool) -> None:
    import optuna

    from optuna_rnn import DatasetSpec
    from optuna_rnn.study import open_session, run_trials

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    rss: dict[int, float] = {}
    peak: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        session = open_session(
            "memory",
            storage=f"sqlite:///{Path(tmp) / 'm.db'}",
            given={"dataset": DatasetSpec(name="digits"), "seed": 0, "max_epochs": 1},
            create=True,
        )

        def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
            rss[trial.number + 1] = rss_mb()
            peak[trial.number + 1] = rss_mb("VmHWM")

        run_trials(session, n_trials=n_trials, progress=False, callbacks=[record])
    print(json.dumps({"rss": rss, "peak": peak}))


def run(*, quick: bool = False) -> Section:
    n = 20 if quick else 200
    early = 5 if quick else 20
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.memory", "--child", str(n), *(["--quick"] if quick else [])],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rss = {int(k): v for k, v in result["rss"].items()}
    peak = {int(k): v for k, v in result["peak"].items()}
    marks = sorted({early, n // 4, n // 2, 3 * n // 4, n} & set(rss))
    growth = rss[n] - rss[early]
    highest = max(range(early, n + 1), key=lambda k: rss[k])
    body = (
        f"Machine: {machine()}. {n} trials in one process (digits, default space, 1 epoch each, SQLite). "
        "RSS is sampled after each trial; 'peak so far' is the process's high-water mark (VmHWM), "
        "which includes what a trial held while it trained.\n\n"
        + table(["after trial", "RSS MB", "peak so far MB"], [[m, rss[m], peak[m]] for m in marks])
        + f"\n\nRSS after trial {n} minus after trial {early}: **{growth:+.1f} MB** (limit: 50 MB). "
        f"Highest RSS after any trial from {early} on: {rss[highest]:.0f} MB (after trial {highest}); "
        f"peak growth from trial {early} to {n}: {peak[n] - peak[early]:+.1f} MB."
    )
    return Section("Memory across trials", "python -m benchmarks --only memory", body)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--child", type=int)
    args = parser.parse_args()
    if args.child:
        child(args.child, quick=args.quick)
    else:
        print(run(quick=args.quick).markdown())
