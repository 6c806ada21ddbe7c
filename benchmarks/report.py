"""Turn pytest-benchmark JSON files into markdown tables and a measured-vs-target bar chart.

Usage::

    python -m pytest benchmarks/ --benchmark-only --benchmark-json=out.json
    python benchmarks/report.py out.json [more.json ...] --md table.md --png plot.png

Prints the markdown (and writes it with ``--md``): where the numbers came from (machine, commit,
date), one row per benchmark (config, median, rounds, measured vs target, other figures), and a
table of every target with "met" or "missed". ``--png`` draws the medians and, per target, the
measured value beside it (matplotlib, Agg backend: no display needed).

Conventions read from each benchmark's ``extra_info``:

* ``config``: its own column (``cpu-small``, ``seed``, ...).
* Measured/target pairs: ``target_<key>`` goes with ``<key>`` (``gbps`` / ``target_gbps``); else
  ``target_<unit>`` goes with ``median_<unit>`` (``median_ms`` / ``target_ms``) or with the one
  other key ending in ``_<unit>`` (``peak_gib`` / ``target_gib``); a bare ``target`` goes with
  ``speedup``, ``ratio`` or ``measured``.
* Direction: higher is better for rates and speed-ups (keys holding ``gbps``, ``per_s``,
  ``speedup``, ``throughput``), lower is better otherwise (times, memory).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

HIGHER_IS_BETTER = ("gbps", "gb/s", "per_s", "speedup", "throughput")


@dataclass
class Target:
    bench: str
    metric: str
    measured: float
    target: float

    @property
    def higher_is_better(self) -> bool:
        return any(h in self.metric.lower() for h in HIGHER_IS_BETTER)

    @property
    def met(self) -> bool:
        return self.measured >= self.target if self.higher_is_better else self.measured <= self.target

    @property
    def relation(self) -> str:
        return ">=" if self.higher_is_better else "<="


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def find_targets(name: str, info: dict) -> list[Target]:
    """Measured/target pairs in one benchmark's extra_info (conventions in the module doc)."""
    out = []
    for key, target in info.items():
        if not _is_number(target) or not (key == "target" or key.startswith("target_")):
            continue
        measured = None
        if key == "target":
            measured = next((k for k in ("speedup", "ratio", "measured") if _is_number(info.get(k))), None)
        else:
            rest = key.removeprefix("target_")
            unit = rest.rsplit("_", 1)[-1]
            if _is_number(info.get(rest)):
                measured = rest
            elif _is_number(info.get(f"median_{unit}")):
                measured = f"median_{unit}"
            else:
                same_unit = [
                    k
                    for k, v in info.items()
                    if _is_number(v) and k.endswith(f"_{unit}") and not k.startswith("target")
                ]
                if len(same_unit) == 1:
                    measured = same_unit[0]
        if measured is not None:
            out.append(Target(name, measured, float(info[measured]), float(target)))
    return out


def load(paths: list[str]) -> tuple[list[dict], list[dict]]:
    """(benchmarks, runs): every benchmark of every file (tagged with its file), and each file's header."""
    benches, runs = [], []
    for p in paths:
        data = json.loads(Path(p).read_text())
        if "benchmarks" not in data:
            raise SystemExit(
                f"{p}: not a pytest-benchmark JSON file (no 'benchmarks' key); write one with "
                "pytest --benchmark-json=FILE"
            )
        runs.append(
            {"file": p, **{k: data.get(k) for k in ("machine_info", "commit_info", "datetime", "version")}}
        )
        for b in data["benchmarks"]:
            benches.append({**b, "file": p})
    return benches, runs


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} us"


def fmt_value(v) -> str:
    if isinstance(v, float):
        if v == 0 or 1e-3 <= abs(v) < 1e6:
            return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return f"{v:.3e}"
    if isinstance(v, list):
        return "[" + ", ".join(fmt_value(x) for x in v[:8]) + (", ..." if len(v) > 8 else "") + "]"
    return str(v)


def _machine(run: dict) -> str:
    m = run.get("machine_info") or {}
    cpu = (m.get("cpu") or {}).get("brand_raw") or m.get("processor") or "?"
    count = (m.get("cpu") or {}).get("count")
    commit = run.get("commit_info") or {}
    cid = (commit.get("id") or "?")[:10] + (" (dirty)" if commit.get("dirty") else "")
    return (
        f"`{run['file']}`: {m.get('node', '?')}, {cpu}"
        + (f" x{count}" if count else "")
        + f", Python {m.get('python_version', '?')}, commit {cid}, {run.get('datetime', '?')}"
    )


def markdown(benches: list[dict], runs: list[dict]) -> str:
    lines = ["Source: " + "; ".join(_machine(r) for r in runs), ""]
    multi = len(runs) > 1
    head = ["benchmark", "config", "median", "rounds", "measured vs target", "other figures"]
    if multi:
        head.insert(0, "file")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    all_targets = []
    for b in sorted(benches, key=lambda b: (b["file"], b.get("fullname", b["name"]))):
        info = dict(b.get("extra_info") or {})
        targets = find_targets(b["name"], info)
        all_targets += targets
        shown = {"config"} | {t.metric for t in targets} | {k for k in info if k.startswith("target")}
        vs = "; ".join(
            f"{t.metric} {fmt_value(t.measured)} {t.relation} {fmt_value(t.target)} "
            f"({'met' if t.met else 'MISSED'})"
            for t in targets
        )
        other = ", ".join(f"{k}={fmt_value(v)}" for k, v in info.items() if k not in shown and v is not None)
        stats = b.get("stats") or {}
        row = [
            f"`{b['name']}`",
            str(info.get("config", "")),
            fmt_time(stats["median"]) if "median" in stats else "",
            str(stats.get("rounds", "")),
            vs or "-",
            other or "-",
        ]
        if multi:
            row.insert(0, Path(b["file"]).name)
        lines.append("| " + " | ".join(row) + " |")
    if all_targets:
        lines += ["", "| benchmark | metric | measured | target | |", "|---|---|---|---|---|"]
        for t in all_targets:
            lines.append(
                f"| `{t.bench}` | {t.metric} | {fmt_value(t.measured)} | {t.relation} {fmt_value(t.target)} | "
                f"{'met' if t.met else '**missed**'} |"
            )
    else:
        lines += ["", "No benchmark in these files carries a target (targets are asserted by the GPU suite)."]
    return "\n".join(lines) + "\n"


def plot(benches: list[dict], path: str) -> None:
    """Medians (log scale) on top; one small panel per target: measured beside target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timed = [b for b in benches if "median" in (b.get("stats") or {})]
    targets = [t for b in benches for t in find_targets(b["name"], dict(b.get("extra_info") or {}))]
    ncol = 4
    nrow_t = math.ceil(len(targets) / ncol)
    top_h = max(2.0, 0.28 * len(timed) + 1)
    fig = plt.figure(figsize=(12, top_h + 2.6 * nrow_t))
    grid = fig.add_gridspec(1 + nrow_t, ncol, height_ratios=[top_h] + [2.6] * nrow_t)
    ax = fig.add_subplot(grid[0, :])
    names = [
        b["name"] + (f" [{b['extra_info']['config']}]" if (b.get("extra_info") or {}).get("config") else "")
        for b in timed
    ]
    medians_ms = [b["stats"]["median"] * 1e3 for b in timed]
    ax.barh(range(len(timed)), medians_ms, color="#4c72b0")
    ax.set_yticks(range(len(timed)), names, fontsize=7)
    ax.invert_yaxis()
    if medians_ms and min(medians_ms) > 0:
        ax.set_xscale("log")
    ax.set_xlabel("median per round (ms, pytest-benchmark)")
    ax.set_title("benchmark medians")
    for i, t in enumerate(targets):
        a = fig.add_subplot(grid[1 + i // ncol, i % ncol])
        color = "#55a868" if t.met else "#c44e52"
        a.bar([0, 1], [t.measured, t.target], color=[color, "#8c8c8c"])
        a.set_xticks([0, 1], ["measured", "target"], fontsize=7)
        a.set_title(f"{t.bench}\n{t.metric} ({'met' if t.met else 'missed'})", fontsize=7)
        a.tick_params(axis="y", labelsize=7)
        for x, v in ((0, t.measured), (1, t.target)):
            a.annotate(fmt_value(v), (x, v), ha="center", va="bottom", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("json", nargs="+", help="pytest-benchmark JSON files (--benchmark-json=FILE)")
    ap.add_argument("--md", help="also write the markdown here")
    ap.add_argument("--png", help="write the bar chart here")
    args = ap.parse_args(argv)
    benches, runs = load(args.json)
    md = markdown(benches, runs)
    sys.stdout.write(md)
    if args.md:
        Path(args.md).write_text(md)
    if args.png:
        plot(benches, args.png)
        print(f"\nwrote {args.png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
