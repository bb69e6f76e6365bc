"""
gwbench_tail: the added echo latency's tail, in small interleaved blocks (gwbench's ``tail`` phase).

A p99 over 2000 round trips of one path in one stretch of seconds is set by whatever else the
machine runs in those seconds.  Here every path keeps one connection open, and the paths take
turns in short blocks (100 round trips, about 10 ms): one **set** is one block on every path, the
order of the paths rotating from set to set, so a disturbance longer than a few milliseconds
hits every path of its set.  The first round trips of each block (`settle`) are not counted:
they follow the path's pause while the others had their turn, which is not the steady traffic
the p99 is about (and would put the switch itself at the p99 of a 100-round-trip block).
Consecutive sets make a **window** (10 sets: 1000 counted round trips per path), enough for a
p99 that is not one sample.

Figures, per gateway: the pooled p50 and p99 of all its counted round trips, and the added
latency (its percentile minus the direct path's); per window, the added p50 and p99 (the path's
percentile in the window minus the direct path's in the same window) and their ratio to
ser2net's and pyrelay's in the same window: the median of those ratios, their quartiles and
range, and how many windows met issue 16's targets (p99 within 1.5x, p50 at parity).  Standard
library only; gwbench hands in its own client (`measure`), so this module imports nothing of it.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any, Callable

#: issue 16: the added echo latency's p50 at parity with ser2net tuned, its p99 within 1.5x.
P50_TARGET = 1.0
P99_TARGET = 1.5

#: The ratios shown: each gateway to ser2net tuned, cmegw to the floors of a Python relay and of a
#: Twisted relay, and to an older tree.
PAIRS = (("cmegw", "ser2net"), ("before", "ser2net"), ("pyrelay", "ser2net"), ("twrelay", "ser2net"),
         ("cmegw", "pyrelay"), ("cmegw", "twrelay"), ("twrelay", "pyrelay"), ("cmegw", "before"))

#: gwbench's options of the tail phase: flag, default, meaning.
OPTIONS = (("--tail-sets", 400, "interleaved sets, one block per path each"),
           ("--tail-block", 100, "counted echo round trips per block"),
           ("--tail-settle", 5, "round trips at each block's start not counted"),
           ("--tail-window", 10, "sets per window of the per-window ratios"))

#: measure(path, count) -> the nanoseconds of `count` echo round trips on that path's open channel.
Measure = Callable[[str, int], list[int]]


def add_options(parser: argparse.ArgumentParser) -> None:
    for flag, default, meaning in OPTIONS:
        parser.add_argument(flag, type=int, default=default, help=f"tail phase: {meaning} (default {default})")


def rotated(names: list[str], by: int) -> list[str]:
    by %= max(1, len(names))
    return names[by:] + names[:by]


def interleave(names: list[str], measure: Measure, sets: int, block: int, warmup: int) -> dict[str, list[list[int]]]:
    """Every path's blocks, set by set in rotating order, after `warmup` round trips on each."""
    for name in names:
        measure(name, warmup)
    blocks: dict[str, list[list[int]]] = {name: [] for name in names}
    for number in range(sets):
        for name in rotated(names, number):
            blocks[name].append(measure(name, block))
    return blocks


def percentile(samples: list[int], fraction: float) -> float:
    """Nearest-rank percentile (as gwbench's), of unsorted samples."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(1, -(-int(fraction * 1000) * len(ordered) // 1000))
    return float(ordered[min(rank, len(ordered)) - 1])


def _spread(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) > 1 else [ordered[0]] * 3
    return {"count": len(ordered), "median": statistics.median(ordered), "q1": quartiles[0],
            "q3": quartiles[2], "min": ordered[0], "max": ordered[-1]}


def windows(blocks: list[list[int]], settle: int, size: int) -> list[list[int]]:
    """The counted round trips of `size` consecutive blocks each (a last, shorter window is dropped)."""
    counted = [b[settle:] for b in blocks]
    return [[x for b in counted[start:start + size] for x in b]
            for start in range(0, len(counted) - size + 1, size)]


def figures(blocks: dict[str, list[list[int]]], block: int, settle: int, window: int) -> dict[str, Any]:
    """Pooled and per-window figures of `interleave`'s blocks (microseconds); 'direct' is the base."""
    sets = min(len(b) for b in blocks.values()) if blocks else 0
    grouped = {name: windows(b[:sets], settle, window) for name, b in blocks.items()}
    direct = grouped.get("direct")
    out: dict[str, Any] = {"sets": sets, "block": block, "settle": settle, "window": window,
                           "windows": len(direct or []), "paths": {}, "ratios": {}}
    per_window: dict[str, list[tuple[float, float]]] = {}
    for name, path_windows in grouped.items():
        pooled = [x for w in path_windows for x in w]
        entry: dict[str, Any] = {"count": len(pooled), "p50_us": percentile(pooled, 0.5) / 1e3,
                                 "p99_us": percentile(pooled, 0.99) / 1e3, "p999_us": percentile(pooled, 0.999) / 1e3}
        if settle:  # the first round trip after the path's pause (not counted above)
            entry["first_p50_us"] = percentile([b[0] for b in blocks[name][:sets]], 0.5) / 1e3
        if name != "direct" and direct is not None:
            base = [x for w in direct for x in w]
            entry["added_p50_us"] = entry["p50_us"] - percentile(base, 0.5) / 1e3
            entry["added_p99_us"] = entry["p99_us"] - percentile(base, 0.99) / 1e3
            per_window[name] = [((percentile(mine, 0.5) - percentile(theirs, 0.5)) / 1e3,
                                 (percentile(mine, 0.99) - percentile(theirs, 0.99)) / 1e3)
                                for mine, theirs in zip(path_windows, direct)]
            entry["window_added_p50_us"] = _spread([p50 for p50, _ in per_window[name]])
            entry["window_added_p99_us"] = _spread([p99 for _, p99 in per_window[name]])
        out["paths"][name] = entry
    for name, base in PAIRS:
        if name in per_window and base in per_window:
            out["ratios"][f"{name}/{base}"] = _window_ratios(per_window[name], per_window[base], out["paths"][name],
                                                             out["paths"][base])
    return out


def _window_ratios(mine: list[tuple[float, float]], theirs: list[tuple[float, float]],
                mine_pooled: dict[str, Any], theirs_pooled: dict[str, Any]) -> dict[str, Any]:
    """Per-window ratios of added p50 and p99 (n/a where the base's added figure is not positive)."""
    result: dict[str, Any] = {}
    for index, (quantile, target) in enumerate((("p50", P50_TARGET), ("p99", P99_TARGET))):
        ratios = [m[index] / t[index] for m, t in zip(mine, theirs) if t[index] > 0]
        a, b = mine_pooled[f"added_{quantile}_us"], theirs_pooled[f"added_{quantile}_us"]
        result[quantile] = {**_spread(ratios), "windows": len(mine), "no_ratio": len(mine) - len(ratios),
                            "met": sum(1 for r in ratios if r <= target), "target": target,
                            "pooled": a / b if a > 0 and b > 0 else None}
    return result


def render(tail: dict[str, Any]) -> str:
    """The tail phase's table and verdicts, for gwbench's report."""
    names = list(tail["paths"])
    width = 12
    lines = [f"tail: echo, {tail['sets']} interleaved sets of {tail['block']} round trips per path (the first "
             f"{tail['settle']} of each not counted; one connection per path, order rotating per set), "
             f"{tail['windows']} windows of {tail['window']} sets",
             f"{'':40}" + "".join(f"{n:>{width}}" for n in names)]

    def row(label: str, value: Callable[[dict[str, Any]], Any]) -> None:
        cells = []
        for n in names:
            v = value(tail["paths"][n])
            cells.append("-" if v is None else v if isinstance(v, str) else f"{v:.1f}")
        lines.append(f"{label:40}" + "".join(f"{c:>{width}}" for c in cells))

    row("  round trips counted", lambda e: str(e["count"]))
    row("  p50, pooled (us)", lambda e: e["p50_us"])
    row("  p99, pooled (us)", lambda e: e["p99_us"])
    row("  p99.9, pooled (us)", lambda e: e["p999_us"])
    row("  added p50, pooled (us)", lambda e: e.get("added_p50_us"))
    row("  added p99, pooled (us)", lambda e: e.get("added_p99_us"))
    for q in ("p50", "p99"):
        row(f"  added {q} per window, median (us)", lambda e, q=q: e.get(f"window_added_{q}_us", {}).get("median"))
        row(f"  added {q} per window, q1..q3 (us)", lambda e, q=q: _range(e.get(f"window_added_{q}_us"), "q1", "q3", 0))
    row("  gateway CPU per round trip (us)", lambda e: e.get("cpu_us_per_round_trip"))
    row("  first round trip of a block, p50 (us)", lambda e: e.get("first_p50_us"))
    for pair, ratio in tail["ratios"].items():
        for q in ("p50", "p99"):
            r = ratio[q]
            sign = "parity" if q == "p50" else f"<= {r['target']:g}"
            pooled = "n/a" if r["pooled"] is None else f"{r['pooled']:.2f}"
            if not r["count"]:
                lines.append(f"{pair} added {q}: pooled {pooled}; no window with a positive base figure")
                continue
            lines.append(f"{pair} added {q}: per window median {r['median']:.2f} (q1..q3 {_range(r, 'q1', 'q3', 2)}, "
                         f"range {_range(r, 'min', 'max', 2)}), {r['met']} of {r['windows']} windows {sign}"
                         + (f" ({r['no_ratio']} n/a)" if r["no_ratio"] else "") + f"; pooled {pooled}")
    lines += verdicts(tail)
    return "\n".join(lines)


def verdicts(tail: dict[str, Any]) -> list[str]:
    """
    Issue 16's two targets in words.  A target holds when both the pooled ratio and the median of
    the per-window ratios meet it; the windows that met it say how steady that is.
    """
    ratio = tail["ratios"].get("cmegw/ser2net")
    if ratio is None:
        return []
    out = []
    for q, words in (("p99", "added p99 within 1.5x of ser2net tuned"), ("p50", "added p50 at parity with ser2net tuned")):
        r = ratio[q]
        holds = r["pooled"] is not None and r["count"] and r["pooled"] <= r["target"] and r["median"] <= r["target"]
        detail = (f"pooled {r['pooled']:.2f}, per-window median {r['median']:.2f}, {r['met']} of {r['windows']} windows"
                  if r["pooled"] is not None and r["count"] else "no ratio")
        out.append(f"issue 16: {words}: {'holds' if holds else 'DOES NOT HOLD'} in this run ({detail})")
    floor, mine = tail["ratios"].get("twrelay/ser2net"), tail["ratios"].get("cmegw/twrelay")
    if floor is not None and mine is not None and floor["p50"]["pooled"] and mine["p50"]["pooled"]:
        out.append(f"issue 16: the floor of a Twisted relay (twrelay) adds {floor['p50']['pooled']:.2f}x ser2net's "
                   f"p50 in this run; cmegw adds {mine['p50']['pooled']:.2f}x twrelay's (pooled)")
    return out


def _range(spread: dict[str, Any] | None, low: str, high: str, digits: int) -> str | None:
    if not spread or not spread.get("count"):
        return None
    return f"{spread[low]:.{digits}f}..{spread[high]:.{digits}f}"
