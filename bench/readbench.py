"""
readbench: the readouts' figures (issue 15), measured with real parts on loopback.

``backlog``: a store with N readings waiting for the MQTT target (real decoded
readings of the simulated meters) is drained to a local Mosquitto: readings/s,
bytes per reading in the store, and the process's RSS before the backlog was
made, with it waiting, and after it was delivered (for N and N/10: RSS must
not grow with the backlog).

``schedule``: a real ``twistd cmegw --simulate`` reads its four meters every
30 s for --seconds while a tunnel client reads meter 5 without a pause: the
longest wait of a tunnel request beyond its own transaction, against the
longest transaction the bus had, and the readings kept per meter against the
readouts due.

    PYTHONPATH=$PWD python bench/readbench.py backlog --readings 10000
    PYTHONPATH=$PWD python bench/readbench.py schedule --seconds 600
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- backlog -------------------------------------------------------------------------------------


def backlog(count: int, folder: Path) -> dict[str, Any]:
    from twisted.internet import defer, reactor

    from cmegw.config.readout import MqttConfig
    from cmegw.readout import discovery, payload
    from cmegw.readout.delivery import Forwarder
    from cmegw.readout.mqtt import MqttTarget
    from cmegw.readout.reading import stored_form
    from cmegw.testing import simulated_readings
    from cmegw.readout.store import ReadingStore

    broker_port = free_port()
    config = folder / "mosquitto.conf"
    config.write_text(f"persistence false\nlog_dest none\nlistener {broker_port} 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen(["/usr/sbin/mosquitto", "-c", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    figures: dict[str, Any] = {"readings": count, "rss_start_mb": round(rss_mb(), 1)}
    samples = [(f"m{primary}", reading) for primary, reading in simulated_readings().items()]
    store = ReadingStore(folder / f"readings-{count}.sqlite", reactor)
    result: dict[str, Any] = {}

    @defer.inlineCallbacks
    def run() -> Any:
        yield store.open()
        base = time.time() - count * 30
        for i in range(count):  # bounded: count readings
            key, reading = samples[i % len(samples)]
            telegrams, decoded = stored_form(reading, key, 1)
            yield store.add(key, base + i * 30, True, telegrams, decoded, "", ["mqtt"])
        figures["store_bytes"] = store.stats.bytes
        figures["bytes_per_reading"] = round(store.stats.bytes / count)
        figures["rss_backlog_mb"] = round(rss_mb(), 1)
        target = MqttTarget(MqttConfig(url=f"mqtt://127.0.0.1:{broker_port}"), reactor, "bench", lambda: [],
                            lambda r: payload.encode(payload.reading_payload(r, "bench")),
                            lambda r: discovery.state_topic("cmegw", "bench", r.meter))
        forwarder = Forwarder(store, target, reactor)
        target.start()
        for _ in range(200):  # bounded: 10 s to connect
            if target.ready():
                break
            yield deferLater(0.05)
        started = time.perf_counter()
        cpu = time.process_time()
        forwarder.start()
        for _ in range(100000):  # bounded: until the backlog is empty or 10 minutes
            waiting, _oldest = yield store.backlog("mqtt")
            if waiting == 0 or time.perf_counter() - started > 600:
                break
            yield deferLater(0.05)
        elapsed = time.perf_counter() - started
        figures["delivered"] = target.status.delivered
        figures["seconds"] = round(elapsed, 2)
        figures["readings_per_second"] = round(count / elapsed)
        figures["cpu_us_per_reading"] = round((time.process_time() - cpu) / count * 1e6)
        figures["rss_after_mb"] = round(rss_mb(), 1)
        forwarder.stop()
        yield target.stop()
        yield store.close()

    def deferLater(seconds: float) -> Any:
        from twisted.internet import task

        return task.deferLater(reactor, seconds, lambda: None)

    def done(outcome: Any) -> None:
        result["outcome"] = outcome
        reactor.stop()

    try:
        time.sleep(0.3)  # the broker's start (a bench, not a test)
        reactor.callWhenRunning(lambda: run().addBoth(done))
        reactor.run()
    finally:
        broker.terminate()
        broker.wait(10)
    if hasattr(result.get("outcome"), "raiseException"):
        result["outcome"].raiseException()
    return figures


# -- schedule ------------------------------------------------------------------------------------


def schedule(seconds: float, folder: Path) -> dict[str, Any]:
    sys.path.insert(0, str(REPO))
    from cmegw.mbus import frames
    from tests.support import defaults_with

    http, tunnel = free_port(), free_port()
    meters = "".join(f'\n[meter.m{p}]\nline = 1\naddress = "{p}"\ninterval = "30s"\n' for p in (1, 2, 5, 10))
    (folder / "cmegw.toml").write_text(defaults_with(("disconnect_timeout = 10", "disconnect_timeout = 0"),
                                                     extra=meters))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    gw = subprocess.Popen([sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
                           "--logfile", str(folder / "twistd.log"), "cmegw", "--config", "cmegw.toml", "--simulate",
                           "--tunnel", f"tcp:{tunnel}:interface=127.0.0.1",
                           "--http", f"tcp:{http}:interface=127.0.0.1", "--https", "tcp:0:interface=127.0.0.1",
                           "--console", "tcp:0:interface=127.0.0.1"], cwd=folder, env=env,
                          start_new_session=True)
    waits: list[float] = []
    try:
        log = folder / "twistd.log"
        for _ in range(200):  # bounded: 20 s for line 1 to open on the simulated bus (a process of its own)
            if log.exists() and "Line 1: opened" in log.read_text(errors="replace"):
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("line 1 never opened on the simulated bus")
        for _ in range(200):  # bounded: 20 s for the tunnel to listen
            try:
                client = socket.create_connection(("127.0.0.1", tunnel), timeout=2)
                break
            except OSError:
                time.sleep(0.1)
        else:
            raise RuntimeError("the tunnel never listened")
        client.settimeout(5)
        request = frames.req_ud2(5)
        deadline = time.monotonic() + seconds
        started = time.time()
        for _ in range(10_000_000):  # bounded by the deadline
            if time.monotonic() > deadline:
                break
            t0 = time.perf_counter()
            client.sendall(request)
            reply = b""
            for _ in range(1000):  # bounded: one RSP_UD
                reply += client.recv(4096)
                if len(reply) >= 6 and reply[0] == 0x68 and len(reply) >= reply[1] + 6:
                    break
            waits.append(time.perf_counter() - t0)
        client.close()
        ended = time.time()
        answer = subprocess.run(["curl", "-s", "--digest", "-u", "admin:admin",
                                 f"http://127.0.0.1:{http}/api/readout"], capture_output=True, text=True, timeout=30)
        status = json.loads(answer.stdout[answer.stdout.find("{"):])
    finally:
        os.killpg(gw.pid, signal.SIGTERM)
        gw.wait(20)
    own = statistics.median(waits)
    due = int(ended // 30) - int(started // 30)
    kept = {m["id"]: m["reads"] - m["failures"] for m in status["meters"]}
    return {
        "seconds": round(ended - started), "tunnel_requests": len(waits),
        "tunnel_median_ms": round(own * 1000, 1), "tunnel_p99_ms": round(sorted(waits)[int(len(waits) * 0.99)] * 1000, 1),
        "tunnel_max_ms": round(max(waits) * 1000, 1),
        "longest_extra_wait_ms": round((max(waits) - own) * 1000, 1),
        "readouts_due_per_meter": due, "readings_kept": kept,
        "failures": {m["id"]: m["failures"] for m in status["meters"]},
        "overruns": {m["id"]: m["overruns"] for m in status["meters"]},
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("backlog", "schedule"))
    parser.add_argument("--readings", type=int, default=10000)
    parser.add_argument("--seconds", type=float, default=600)
    options = parser.parse_args()
    if not shutil.which("mosquitto") and not os.path.exists("/usr/sbin/mosquitto") and options.what == "backlog":
        print("needs Debian's mosquitto")
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if options.what == "backlog":
            figures = backlog(options.readings, folder)
        else:
            figures = schedule(options.seconds, folder)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
