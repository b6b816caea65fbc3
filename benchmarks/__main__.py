"""Run the benchmarks and write RESULTS.md: ``python -m benchmarks [--quick] [--only NAME ...]``.

The full run takes about 3.5 hours on 2 cores and rewrites ``benchmarks/RESULTS.md`` (plus its
PNG plots). ``--quick`` is a smoke run of every section with tiny settings (under 3 minutes),
written to ``benchmarks/quick/RESULTS.md`` so the committed results stay as measured.
With ``--only``, just those sections run and replace their own part of the file. The search
sections save each finished run; ``--resume`` picks an interrupted run up where it stopped.
What the numbers mean is written by hand in ``benchmarks/notes/<section>.md``, which is appended
to the section each time it is rewritten (so a re-run keeps the analysis; update it to match).
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
import time

from benchmarks import common

SECTIONS = (
    "epoch_speed",
    "end_to_end",
    "search_quality",
    "pruner_choice",
    "pruning",
    "overhead",
    "memory",
    "workers",
    "gpu",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny settings, a smoke run")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the runs an interrupted run of the search sections finished (saved under .runs/)",
    )
    args = parser.parse_args(argv)
    out_dir = common.set_output_dir(quick=args.quick)
    common.RESUME = args.resume
    results = out_dir / "RESULTS.md"
    written: dict[str, str] = {}
    for name in args.only or SECTIONS:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError:
            print(f"[{name}] not available, skipped")
            continue
        print(f"[{name}] running{' (quick)' if args.quick else ''} ...", flush=True)
        t0 = time.perf_counter()
        section = module.run(quick=args.quick)
        if section is None:  # the gpu section, on a machine without one
            print(f"[{name}] skipped: nothing to measure on this machine (RESULTS.md keeps the last run)")
            continue
        notes = common.HERE / "notes" / f"{name}.md"
        analysis = notes.read_text() + "\n" if notes.exists() and not args.quick else ""
        run_time = f"_Section run time: {time.perf_counter() - t0:.0f} s._\n"
        written[name] = section.markdown() + "\n" + analysis + run_time
        print(f"[{name}] done in {time.perf_counter() - t0:.0f} s", flush=True)
        # Read the file again just before writing: another `--only` run may have updated it meanwhile.
        # Sections this run does not rewrite (or skips, as gpu without a GPU) stay as last measured.
        kept = _split(results.read_text()) if results.exists() else {}
        _write(results, {**kept, **written}, quick=args.quick)
    print(f"wrote {results}" if written else "nothing was measured; RESULTS.md is unchanged")
    return 0


def _split(text: str) -> dict[str, str]:
    """RESULTS.md's sections by name. A section holding a second ``## `` heading lost its marker
    (a hand edit): rewriting the first would silently drop the second, so that is an error."""
    parts = re.split(r"^<!-- section: (\w+) -->\n", text, flags=re.M)
    sections = {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}
    for name, body in sections.items():
        headings = re.findall(r"^## .*", body, flags=re.M)
        if len(headings) > 1:
            raise SystemExit(
                f"RESULTS.md: section {name!r} also holds {headings[1]!r}; put its "
                "'<!-- section: NAME -->' marker back above it before re-running"
            )
    return sections


def _write(path: common.Path, sections: dict[str, str], *, quick: bool) -> None:
    head = (
        "# optuna-rnn benchmarks\n\n"
        + ("Quick smoke run: tiny settings, the numbers mean little.\n\n" if quick else "")
        + "Every comparison runs both sides in the same run on the same machine. "
        "Reproduce with `python -m benchmarks` (or `make bench`).\n\n"
    )
    body = "".join(f"<!-- section: {n} -->\n{sections[n]}" for n in SECTIONS if n in sections)
    path.write_text(head + body)


if __name__ == "__main__":
    sys.exit(main())
