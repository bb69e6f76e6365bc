"""
The software update for real, end to end.

Two real wheels of cmegw are built from copies of this repository (the second
with a higher version), a virtualenv is made in the test's directory (the
running environment's packages visible, nothing downloaded), the first wheel
is installed into it and a real ``twistd cmegw`` is started from it.  The
second wheel is then uploaded through ``POST /api/update`` with Digest
admin/admin: a truncated wheel and a wrong ``X-SHA256`` are refused and the
version stays; a wheel pip itself refuses (a Python it does not support) ends
in ``failed`` and the version stays; the right checksum installs it, the
process starts again on the new code and ``/api/status`` reports the new
version; the first wheel, sent without a checksum, brings the old version back.

Everything listens on 127.0.0.1, every wait has a deadline and the process is
stopped by the cleanups.  The test is skipped where no wheel can be built.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from tests.support import REPO, GatewayProcess, free_port, open_pty
from tests.web_helpers import digest_header

#: The longest a build, a virtualenv or an install may take (seconds).
STEP_TIMEOUT = 120
#: The longest an update may take from the upload to the new version answering (seconds).
UPDATE_TIMEOUT = 90.0
#: The web part's log line once it listens: once per start of the gateway's process.
WEB_LISTENING = "Web administration on http://"
#: The updater's log line when an install fails.
UPDATE_FAILED = "Software update failed"
#: What is left out of the copies of the repository.
IGNORED = shutil.ignore_patterns(".git", ".venv", "_trial_temp*", "build", "dist", "*.egg-info", "__pycache__",
                                 ".mypy_cache", "*.pyc", "node_modules")


def repo_version() -> str:
    match = re.search(r"^version\s*=\s*(\S+)\s*$", (REPO / "setup.cfg").read_text(), re.M)
    if match is None:
        raise SkipTest("setup.cfg has no version")
    return match[1]


def next_version(version: str, step: int = 1) -> str:
    """The version `step` post-releases after `version` (0.1.0 -> 0.1.0.post1)."""
    match = re.fullmatch(r"(.*?)(?:\.post(\d+))?", version)
    assert match is not None
    return f"{match[1]}.post{int(match[2] or 0) + step}"


def copy_source(target: Path, version: str, python_requires: str | None = None) -> Path:
    """A copy of the repository whose setup.cfg and cmegw/__init__.py say `version`."""
    shutil.copytree(REPO, target, ignore=IGNORED)
    setup = target / "setup.cfg"
    text, count = re.subn(r"^version\s*=.*$", f"version = {version}", setup.read_text(), count=1, flags=re.M)
    assert count == 1, "setup.cfg has no version line"
    if python_requires is not None:
        text, count = re.subn(r"^python_requires\s*=.*$", f"python_requires = {python_requires}", text,
                              count=1, flags=re.M)
        assert count == 1, "setup.cfg has no python_requires line"
    setup.write_text(text)
    init = target / "cmegw" / "__init__.py"
    text, count = re.subn(r'^__version__\s*=.*$', f'__version__ = "{version}"', init.read_text(), count=1,
                          flags=re.M)
    assert count == 1, "cmegw/__init__.py has no __version__"
    init.write_text(text)
    return target


def quiet_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=STEP_TIMEOUT, env=quiet_env(), **kwargs)


def wheel_builders() -> list[list[str]]:
    """
    Ways to build a wheel without the network, best first: pip of this
    interpreter without build isolation (needs setuptools with bdist_wheel:
    the ``wheel`` package or setuptools >= 70.1), then the PEP 517 hook of
    setuptools under the system's python3 (Debian ships python3-wheel).
    The command is completed with the output folder and run in the source.
    """
    builders = [[sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                 "--ignore-requires-python", "--no-cache-dir", "-q", ".", "-w"]]
    hook = "import sys; from setuptools import build_meta; print(build_meta.build_wheel(sys.argv[1]))"
    for python in (shutil.which("python3"), "/usr/bin/python3"):
        if python and os.path.exists(python) and [python, "-c", hook] not in builders:
            builders.append([python, "-c", hook])
    return builders


class Builder:
    """Builds wheels with the first way that works here (found once)."""

    def __init__(self) -> None:
        self.working: list[str] | None = None
        self.failures: list[str] = []

    def build(self, source: Path, out: Path) -> Path:
        out.mkdir(parents=True, exist_ok=True)
        candidates = [self.working] if self.working else wheel_builders()
        for builder in candidates:
            before = set(out.glob("cmegw-*.whl"))
            try:
                result = run(builder + [str(out)], cwd=source)
            except (OSError, subprocess.TimeoutExpired) as e:
                self.failures.append(f"{builder[0]}: {e}")
                continue
            made = sorted(set(out.glob("cmegw-*.whl")) - before)
            if result.returncode == 0 and len(made) == 1:
                self.working = builder
                return made[0]
            tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
            self.failures.append(f"{' '.join(builder[:3])}: exit {result.returncode}: {' / '.join(tail)}")
        if self.working:
            raise AssertionError(f"the wheel of {source} could not be built: {self.failures[-1]}")
        raise SkipTest("no wheel can be built here (install the 'wheel' package or python3-wheel): "
                       + "; ".join(self.failures))


def make_venv(path: Path) -> Path:
    """
    A virtualenv at `path` that sees the running environment's packages
    (twisted, klein, pip, ...) but not this repository; its python.

    ``--system-site-packages`` gives the base interpreter's packages; when the
    tests run in a virtualenv themselves, its site-packages is added with a
    ``.pth`` file (after the new environment's own, so what is installed there
    wins).
    """
    result = run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)])
    if result.returncode != 0:
        raise SkipTest(f"python -m venv failed: {result.stderr.strip()[-500:]}")
    python = path / "bin" / "python"
    own = run([str(python), "-c", "import site; print(site.getsitepackages()[0])"])
    assert own.returncode == 0, own.stderr
    ours = [p for p in site.getsitepackages() if os.path.isdir(p) and Path(p).resolve() != REPO.resolve()]
    (Path(own.stdout.strip()) / "_cmegw_test_parent.pth").write_text("".join(p + "\n" for p in ours))
    check = run([str(python), "-c", "import twisted, klein, pip, sys; print(sys.prefix)"])
    if check.returncode != 0:
        raise SkipTest(f"the virtualenv does not see twisted, klein and pip: {check.stderr.strip()[-500:]}")
    return python


class Client:
    """Requests to the gateway's HTTP port with Digest admin/admin (a fresh challenge each time)."""

    def __init__(self, port: int, user: str = "admin", password: str = "admin") -> None:
        self.port, self.user, self.password = port, user, password

    def _once(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, Any, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        headers = dict(headers or {})
        # The challenge first (without the body), then the request with its answer.
        code, answer, data = self._once(method, path, None if body is None else b"", headers)
        if code == 401:
            challenges = answer.get_all("WWW-Authenticate") or []
            challenge = next((c for c in challenges if "SHA-256" in c), challenges[0] if challenges else "")
            headers["Authorization"] = digest_header(challenge, self.user, self.password, method, path)
            code, answer, data = self._once(method, path, body, headers)
        try:
            return code, json.loads(data) if data else None
        except ValueError:
            return code, data.decode("utf-8", "replace")

    def status(self) -> dict[str, Any]:
        code, body = self.request("GET", "/api/status")
        if code != 200:
            raise AssertionError(f"/api/status answered {code}: {body}")
        return body

    def upload(self, wheel: Path, data: bytes | None = None, sha256: str | None = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/octet-stream", "X-Filename": wheel.name}
        if sha256 is not None:
            headers["X-SHA256"] = sha256
        return self.request("POST", "/api/update", wheel.read_bytes() if data is None else data, headers)


class SoftwareUpdateProcessTests(SynchronousTestCase):
    """One gateway installed from a wheel, updated through the API."""

    def setUp(self) -> None:
        started = time.monotonic()
        self.directory = Path(os.path.abspath(self.mktemp()))
        self.directory.mkdir(parents=True)
        builder = Builder()
        self.old_version = repo_version()
        self.new_version = next_version(self.old_version)
        self.refused_version = next_version(self.old_version, 2)
        dist = self.directory / "dist"
        self.old_wheel = builder.build(copy_source(self.directory / "src-old", self.old_version), dist)
        self.new_wheel = builder.build(copy_source(self.directory / "src-new", self.new_version), dist)
        self.unsupported_wheel = builder.build(copy_source(self.directory / "src-unsupported", self.refused_version,
                                                           python_requires=">=3.99"), dist)
        for path in ("src-old", "src-new", "src-unsupported"):
            shutil.rmtree(self.directory / path, ignore_errors=True)
        self.venv = self.directory / "venv"
        self.python = make_venv(self.venv)
        # --ignore-installed: the running environment may hold this version too; never touch it.
        install = run([str(self.python), "-m", "pip", "install", "--no-deps", "--no-index", "--no-input",
                       "--ignore-installed", str(self.old_wheel)])
        self.assertEqual(install.returncode, 0, install.stdout + install.stderr)
        plugins = run([str(self.python), "-c", "from twisted.plugin import IPlugin, getPlugins; "
                                               "list(getPlugins(IPlugin))"])
        self.assertEqual(plugins.returncode, 0, plugins.stderr)
        self.assertEqual(self.installed_version(), self.old_version)

        master, slave, device = open_pty()
        for fd in (master, slave):
            self.addCleanup(os.close, fd)
        self.http, tunnel = free_port(), free_port()
        home = self.directory / "gateway"
        self.gateway = GatewayProcess(home, [
            "--config", str(home / "cmegw.toml"), "--device", device,
            "--tunnel", f"tcp:{tunnel}:interface=127.0.0.1", "--http", f"tcp:{self.http}:interface=127.0.0.1",
        ], python=str(self.python))
        self.addCleanup(self.gateway.stop)
        self.gateway.start(wait_ports=[self.http])
        self.client = Client(self.http)
        self.setup_seconds = time.monotonic() - started

    def installed_version(self) -> str:
        """The version the virtualenv imports, asked from a fresh interpreter there."""
        result = run([str(self.python), "-c", "import cmegw, sys; print(cmegw.__version__); print(cmegw.__file__)"],
                     cwd=self.directory)
        self.assertEqual(result.returncode, 0, result.stderr)
        version, where = result.stdout.split()
        self.assertTrue(where.startswith(str(self.venv)), f"cmegw is imported from {where}, not the virtualenv")
        return version

    def log_tail(self) -> str:
        return self.gateway.log()[-4000:]

    def wait_for(self, what: str, check: Any, log_mark: Any, timeout: float = UPDATE_TIMEOUT) -> Any:
        """
        Wait for the gateway's log to show `log_mark(log)` (woken by its
        output, bounded by `timeout`), then `check()` once: its answer (None:
        the log said so but the API does not).
        """
        try:
            self.gateway.wait_log(log_mark, what, timeout)
        except (TimeoutError, RuntimeError) as e:
            self.fail(f"no {what}: {e}")
        result = check()
        if result is None:
            self.fail(f"the log showed {what} but the API does not agree:\n{self.log_tail()}")
        return result

    def web_listening(self) -> int:
        """How often the web part has said it listens (once per start of the process)."""
        return self.gateway.log().count(WEB_LISTENING)

    def assertStillRunning(self, version: str, boot: str) -> None:
        status = self.client.status()
        self.assertEqual((status["software_version"], status["boot"]), (version, boot))
        self.assertEqual(self.installed_version(), version)

    def update_to(self, wheel: Path, version: str, sha256: str | None) -> float:
        """Upload `wheel`, wait for the gateway to answer on `version` with a new boot; the seconds it took."""
        before = self.client.status()
        pid = self.gateway.process.pid
        listening, failures = self.web_listening(), self.gateway.log().count(UPDATE_FAILED)
        started = time.monotonic()
        code, body = self.client.upload(wheel, sha256=sha256)
        self.assertEqual(code, 202, body)
        self.assertEqual(body["installing"], version)
        self.assertEqual(body["sha256"], hashlib.sha256(wheel.read_bytes()).hexdigest())

        def back() -> dict[str, Any] | None:
            status = self.client.status()
            if status["boot"] != before["boot"] and status["software_version"] == version:
                return status
            if status["update"] and status["update"]["phase"] == "failed":
                self.fail(f"the update failed: {status['update']}")
            return None

        # The new process is up once its web part listens once more than before the upload.
        status = self.wait_for(f"gateway on {version}", back,
                               lambda log: log.count(WEB_LISTENING) > listening or log.count(UPDATE_FAILED) > failures)
        took = time.monotonic() - started
        self.assertEqual(self.gateway.process.pid, pid, "the process started again in place (same pid)")
        self.assertEqual(status["update"]["phase"], "idle")
        self.assertEqual(self.installed_version(), version)
        code, update = self.client.request("GET", "/api/update")
        self.assertEqual((code, update["running_version"]), (200, version))
        self.assertIn("Starting again on the new software", self.gateway.log())
        code, page = self.client.request("GET", "/system")
        self.assertEqual(code, 200)
        self.assertIn(version, page)
        self.assertIn(str(self.venv), page, "the System page shows the virtualenv as the environment")
        return took

    def test_update_through_the_api(self) -> None:
        status = self.client.status()
        self.assertEqual(status["software_version"], self.old_version)
        boot = status["boot"]
        data = self.new_wheel.read_bytes()
        digest = hashlib.sha256(data).hexdigest()

        # A truncated wheel: refused at once, with why; nothing installed.
        code, body = self.client.upload(self.new_wheel, data=data[:len(data) // 2], sha256=None)
        self.assertEqual(code, 400, body)
        self.assertIn("not a valid zip archive", json.dumps(body))
        self.assertIn(f"still running {self.old_version}", json.dumps(body))
        self.assertStillRunning(self.old_version, boot)

        # The right wheel with a wrong checksum: refused, the checksum of the file is said.
        code, body = self.client.upload(self.new_wheel, sha256="0" * 64)
        self.assertEqual(code, 400, body)
        self.assertIn(f"the SHA-256 of the file is {digest}, not the one given", json.dumps(body))
        self.assertStillRunning(self.old_version, boot)

        # A sound wheel pip refuses (it needs another Python): failed, why, and the version stays.
        code, body = self.client.upload(self.unsupported_wheel)
        self.assertEqual(code, 202, body)

        def settled() -> dict[str, Any] | None:
            _, update = self.client.request("GET", "/api/update")
            return update if update["phase"] not in ("installing", "restarting") else None

        update = self.wait_for("end of the refused install", settled,
                               lambda log: UPDATE_FAILED in log, timeout=STEP_TIMEOUT)
        self.assertEqual((update["phase"], update["version"]), ("failed", self.refused_version), update)
        self.assertIn("requires a different Python", update["message"])
        self.assertIn(f"still running {self.old_version}", update["message"])
        self.assertStillRunning(self.old_version, boot)

        # The right checksum: installed, the gateway starts again on the new code.
        first = self.update_to(self.new_wheel, self.new_version, digest)
        # Back to the first wheel, this time without a checksum (X-SHA256 is optional).
        second = self.update_to(self.old_wheel, self.old_version, None)
        print(f"\n  setup {self.setup_seconds:.1f} s; update to {self.new_version} {first:.1f} s; "
              f"back to {self.old_version} {second:.1f} s")
