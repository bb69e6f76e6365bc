"""
readbench_store: what the reading store costs on this machine.

Writes N realistic readings (the four simulated meters' decoded readouts,
queued for two targets) and reports the bytes per reading in the file, the
insert rate inline (the SQL alone) and through the store's thread on the
reactor (what the service sees), and the rate a forwarder can page through
the queue.  Run from the repository:  PYTHONPATH=. python bench/readbench_store.py
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from twisted.internet import defer, task
from twisted.internet.task import Clock

from cmegw.testing import stored_readings
from cmegw.readout.store import ReadingStore, encode_body

T0 = 1_710_253_380.0


def meter_readings() -> list[tuple[str, list[str], dict]]:
    return stored_readings(T0)


def file_bytes(path: Path) -> int:
    """The database once checkpointed: page_count * page_size."""
    with sqlite3.connect(path) as c:
        c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        size = c.execute("PRAGMA page_count").fetchone()[0] * c.execute("PRAGMA page_size").fetchone()[0]
    c.close()
    return size


def inline(path: Path, n: int, meters: list) -> dict[str, float]:
    store = ReadingStore(path, Clock(), inline=True)
    store.open()
    empty = file_bytes(path)
    start = time.perf_counter()
    for i in range(n):
        name, telegrams, decoded = meters[i % len(meters)]
        store.add(name, T0 + i * 15, True, telegrams, decoded, "", ["mqtt", "push.1"])
    inserts = n / (time.perf_counter() - start)
    start = time.perf_counter()
    fetched, after = 0, 0
    while True:
        page: list = []
        store.pending("mqtt", 100, after).addCallback(page.extend)
        if not page:
            break
        fetched += len(page)
        after = page[-1].id
    pages = fetched / (time.perf_counter() - start)
    store.close()
    size = file_bytes(path)
    return {"inserts_per_s": inserts, "pending_per_s": pages, "bytes_per_reading": (size - empty) / n,
            "file_bytes": size}


@defer.inlineCallbacks
def threaded(reactor, path: Path, n: int, meters: list, out: dict) -> defer.Deferred:
    store = ReadingStore(path, reactor)
    yield store.open()
    start = time.perf_counter()
    for i in range(n):  # one after the other, as the scheduler's readings arrive
        name, telegrams, decoded = meters[i % len(meters)]
        yield store.add(name, T0 + i * 15, True, telegrams, decoded, "", ["mqtt", "push.1"])
    out["sequential_per_s"] = n / (time.perf_counter() - start)
    start = time.perf_counter()
    yield defer.gatherResults([
        store.add(meters[i % len(meters)][0], T0 + i, True, meters[i % len(meters)][1],
                  meters[i % len(meters)][2], "", ["mqtt"]) for i in range(n)])
    out["pipelined_per_s"] = n / (time.perf_counter() - start)
    yield store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readings", type=int, default=2000)
    parser.add_argument("--dir", help="where the files go (default: a temporary folder)")
    args = parser.parse_args()
    meters = meter_readings()
    folder = Path(args.dir or tempfile.mkdtemp(prefix="readbench-"))
    folder.mkdir(parents=True, exist_ok=True)
    plain = sum(len(json.dumps({"telegrams": t, "decoded": d}, separators=(",", ":"))) for _, t, d in meters)
    stored = sum(len(encode_body(t, d)) for _, t, d in meters)
    figures: dict = {"readings": args.readings, "records_per_reading": sum(
        len(d["records"]) for _, _, d in meters) / len(meters),
        "plain_json_bytes": plain / len(meters), "stored_body_bytes": stored / len(meters)}
    figures.update(inline(folder / "inline.db", args.readings, meters))
    task.react(lambda reactor: threaded(reactor, folder / "threaded.db", args.readings, meters, figures)
               .addCallback(lambda _: report(folder, figures)))


def report(folder: Path, figures: dict) -> None:
    for suffix in ("inline.db", "threaded.db"):
        for extra in ("", "-wal", "-shm"):
            try:
                os.unlink(folder / (suffix + extra))
            except FileNotFoundError:
                pass
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:,.1f}" if isinstance(value, float) else f"{key:<{width}}  {value:,}")


if __name__ == "__main__":
    main()
