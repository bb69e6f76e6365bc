"""
The web administration end to end: a real ``twistd cmegw`` process (line 1
on a pty, loopback ports only), asked by curl with ``--digest`` and
``--basic`` over HTTP and HTTPS, by ``openssl s_client`` for the TLS versions
(1.1 refused, 1.2 and 1.3 accepted), and by raw sockets for 408, 413 and 400.
Every wait is bounded; the process is stopped by the cleanups.
"""

from __future__ import annotations

import os
import select
import socket
import stat
import subprocess
import time
from pathlib import Path

import attrs
from twisted.trial.unittest import SynchronousTestCase

from cmegw.config.model import AuthDirective, User
from cmegw.config.store import ConfigStore
from cmegw.tls.store import SELF_SIGNED_CERT, SELF_SIGNED_KEY
from tests.support import GatewayProcess, free_port, open_pty, read_socket, require_program

#: Seconds a client program may take.
CLIENT_TIMEOUT = 20
MAX_TIMEOUT = 2


class WebProcessTests(SynchronousTestCase):
    """A gateway per test, stopped by its cleanup."""

    def setUp(self) -> None:
        self.curl = require_program("curl")
        self.openssl = require_program("openssl")
        self.directory = Path(os.path.abspath(self.mktemp()))
        self.directory.mkdir(parents=True)
        config_path = self.directory / "cmegw.toml"
        store = ConfigStore(config_path)
        store.load()
        config = store.config
        store.change(config.evolve(
            http=attrs.evolve(config.http, max_timeout=MAX_TIMEOUT, max_bytes=4096),
            auth=config.auth + (AuthDirective("/serial", "serial", "Basic",
                                              (User.with_password("bob", "serial", "s3cret"),)),)))
        master, slave, device = open_pty()
        for fd in (master, slave):
            self.addCleanup(os.close, fd)
        self.http, self.https, tunnel, console = free_port(), free_port(), free_port(), free_port()
        self.gateway = GatewayProcess(self.directory, [
            "--config", str(config_path), "--device", device,
            "--http", f"tcp:{self.http}:interface=127.0.0.1", "--https", f"tcp:{self.https}:interface=127.0.0.1",
            "--tunnel", f"tcp:{tunnel}:interface=127.0.0.1", "--console", f"tcp:{console}:interface=127.0.0.1",
        ])
        self.addCleanup(self.gateway.stop)
        self.gateway.start(wait_ports=[self.http, self.https])

    def curl_status(self, url: str, *args: str) -> tuple[int, str]:
        """The status code and body curl got."""
        result = subprocess.run([self.curl, "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10",
                                 *args, url], capture_output=True, text=True, timeout=CLIENT_TIMEOUT)
        body, _, code = result.stdout.rpartition("\n")
        return int(code or 0), body

    def test_curl_digest(self) -> None:
        url = f"http://127.0.0.1:{self.http}/status"
        self.assertEqual(self.curl_status(url)[0], 401)
        self.assertEqual(self.curl_status(url, "--digest", "-u", "admin:wrong")[0], 401)
        code, body = self.curl_status(url, "--digest", "-u", "admin:admin")
        self.assertEqual(code, 200, self.gateway.log()[-3000:])
        self.assertIn("admin", body)

    def test_md5_digest_and_replay(self) -> None:
        """The MD5 challenge (what browsers use) works; the same Authorization header twice does not."""
        import http.client

        from tests.web_helpers import digest_header

        def get(headers: dict[str, str]) -> http.client.HTTPResponse:
            connection = http.client.HTTPConnection("127.0.0.1", self.http, timeout=10)
            self.addCleanup(connection.close)
            connection.request("GET", "/status?x=1", headers=headers)
            response = connection.getresponse()
            response.read()
            return response

        challenges = get({}).headers.get_all("WWW-Authenticate")
        md5 = next(c for c in challenges if "MD5" in c)
        header = digest_header(md5, "admin", "admin", "GET", "/status?x=1")
        self.assertEqual(get({"Authorization": header}).status, 200)
        self.assertEqual(get({"Authorization": header}).status, 401)

    def test_password_change_and_sign_out(self) -> None:
        """curl changes admin's password on the page, signs in with the new one, signs out and in again."""
        import re

        base = f"http://127.0.0.1:{self.http}"
        jar = str(self.directory / "cookies")
        old, new = ("--digest", "-u", "admin:admin"), ("--digest", "-u", "admin:n3w-Passw0rd")
        code, page = self.curl_status(base + "/http/authentication?user=admin&uri=%2F", *old, "-c", jar)
        self.assertEqual(code, 200)
        self.assertIn('value="admin"', page)
        token = re.search(r'name="_csrf" value="([0-9a-f]+)"', page).group(1)
        form = ["-b", jar, "--data-urlencode", "uri=/", "--data-urlencode", "name=admin", "--data-urlencode",
                f"_csrf={token}", "-H", f"Origin: {base}"]
        code, page = self.curl_status(base + "/http/authentication/user", *old, *form,
                                      "--data-urlencode", "password=n3w-Passw0rd", "--data-urlencode", "confirm=x")
        self.assertEqual(code, 400)
        self.assertIn("The two passwords differ", page)
        code, page = self.curl_status(base + "/http/authentication/user", *old, *form,
                                      "--data-urlencode", "password=n3w-Passw0rd",
                                      "--data-urlencode", "confirm=n3w-Passw0rd")
        self.assertEqual(code, 200, page[-2000:])
        self.assertIn("Your password was changed.", page)
        self.assertEqual(self.curl_status(base + "/status", *old)[0], 401)
        code, css = self.curl_status(base + "/static/cmegw.css", *old)
        self.assertEqual(code, 200, "the result page keeps its stylesheet under the old credentials")
        self.assertIn("--error", css)
        self.assertEqual(self.curl_status(base + "/static/ops.css", *old)[0], 200, "the Status page's too")
        self.assertEqual(self.curl_status(base + "/status", *new)[0], 200)

        result = subprocess.run([self.curl, "-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                                 "--max-time", "10", *new, base + "/logout"], capture_output=True, text=True,
                                timeout=CLIENT_TIMEOUT)
        code, _, target = result.stdout.partition(" ")
        self.assertEqual(code, "303")
        self.assertIn("/logout?signed-out=", target)
        code, page = self.curl_status(target)
        self.assertEqual(code, 401)
        self.assertIn("Signed out", page)
        self.assertIn("Sign in again", page)
        result = subprocess.run([self.curl, "-s", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}",
                                 "--max-time", "10", *new, target], capture_output=True, text=True,
                                timeout=CLIENT_TIMEOUT)
        code, _, target = result.stdout.partition(" ")
        self.assertEqual((code, target.rpartition("@")[2]), ("303", f"127.0.0.1:{self.http}/status"),
                         "the password typed again signs in")

    def test_curl_basic(self) -> None:
        url = f"http://127.0.0.1:{self.http}/serial"
        self.assertEqual(self.curl_status(url, "--basic", "-u", "bob:wrong")[0], 401)
        self.assertEqual(self.curl_status(url, "--basic", "-u", "bob:s3cret")[0], 200)
        self.assertEqual(self.curl_status(url, "--digest", "-u", "admin:admin")[0], 401)

    def test_curl_https(self) -> None:
        """HTTPS out of the box: the self-signed certificate, its key 0600 beside the configuration."""
        certificate = self.directory / SELF_SIGNED_CERT
        key = self.directory / SELF_SIGNED_KEY
        self.assertEqual(stat.S_IMODE(key.stat().st_mode), 0o600)
        url = f"https://127.0.0.1:{self.https}/status"
        code, _ = self.curl_status(url, "--cacert", str(certificate), "--digest", "-u", "admin:admin")
        self.assertEqual(code, 200)

    def s_client(self, version: str) -> subprocess.CompletedProcess:
        return subprocess.run([self.openssl, "s_client", "-connect", f"127.0.0.1:{self.https}", version,
                               "-cipher", "DEFAULT:@SECLEVEL=0", "-brief"],
                              input="", capture_output=True, text=True, timeout=CLIENT_TIMEOUT)

    def test_tls_versions(self) -> None:
        """openssl s_client: TLS 1.2 and 1.3 accepted, TLS 1.1 and 1.0 refused."""
        for version, name in (("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")):
            result = self.s_client(version)
            self.assertIn(f"Protocol version: {name}", result.stdout + result.stderr)
        for version in ("-tls1_1", "-tls1"):
            result = self.s_client(version)
            self.assertNotEqual(result.returncode, 0)
            self.assertNotIn("Protocol version", result.stdout + result.stderr)
            self.assertIn("alert protocol version", result.stdout + result.stderr)  # the server said no

    def raw(self, data: bytes, wait: float = MAX_TIMEOUT + 3) -> bytes:
        with socket.create_connection(("127.0.0.1", self.http), timeout=5) as sock:
            if data:
                sock.sendall(data)
            return read_socket(sock, wait)

    def test_408_slow_trickle(self) -> None:
        """A request trickled a byte at a time still times out after Max Timeout, with 408."""
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.http), timeout=5) as sock:
            for byte in b"GET /status HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n":
                readable, _, _ = select.select([sock], [], [], 0.2)
                if readable or time.monotonic() - started > MAX_TIMEOUT - 0.3:
                    # The answer is there, or nearly due: stop writing, so no byte reaches a
                    # socket the gateway has just closed (its RST would discard the 408).
                    break
                sock.sendall(bytes([byte]))
            answer = read_socket(sock, MAX_TIMEOUT + 3)
        self.assertTrue(answer.startswith(b"HTTP/1.1 408 "), answer)
        # Counted from the request's start: a timer that each byte restarted would answer
        # MAX_TIMEOUT after the last byte, at MAX_TIMEOUT - 0.3 + MAX_TIMEOUT or later.
        self.assertLess(time.monotonic() - started, MAX_TIMEOUT + 1.5)

    def test_413_and_400(self) -> None:
        self.assertTrue(self.raw(b"GET / HTTP/1.1\r\nX: " + b"a" * 5000 + b"\r\n\r\n").startswith(b"HTTP/1.1 413 "))
        self.assertTrue(self.raw(b"\x16\x03\x01 not http\r\n\r\n").startswith(b"HTTP/1.1 400 "))
