"""
A real Mosquitto broker for the tests, a test CA, and a subscriber.

- ``broker = Mosquitto(tmpdir, users={"gw": "secret"}, tls=TestCA(tmpdir).issue())``;
  ``yield broker.start()``; ``self.addCleanup(broker.stop)``.  It listens on a
  free port of 127.0.0.1 (`port`; `url` is mqtt://127.0.0.1:port, with `tls`
  mqtts://localhost:port, a name of the certificate); `start` raises SkipTest when
  /usr/sbin/mosquitto is absent.  `stop` is bounded and safe to call twice;
  `pause`/`resume` freeze it (SIGSTOP/SIGCONT); `log` is what it wrote.
- `TestCA`: a CA that issues server and client certificates (`TlsFiles` in
  a folder), made with `cryptography` (cmegw.tls only reads and checks them).
- ``yield publish(broker, topic, payload)`` publishes one message (mosquitto_pub).
- ``sub = yield subscribe(broker, ["cmegw/#"], count=3)``: a
  ``mosquitto_sub`` that has its subscription confirmed when the Deferred
  fires; ``messages = yield sub.done`` gives the `Received` messages once
  `count` arrived or `timeout` passed (whatever came by then).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import pwd
import shutil
import string
import signal
import subprocess
from pathlib import Path
from typing import Any, Sequence

import attrs
from twisted.internet import defer, error, protocol, reactor
from twisted.trial.unittest import SkipTest

from tests.support import free_port

MOSQUITTO = "/usr/sbin/mosquitto"
#: The longest the helpers wait for a broker or a subscriber to start or stop, seconds.
BOUND = 10.0


def _bounded(d: defer.Deferred, seconds: float, what: str) -> defer.Deferred:
    def timed_out(failure: Any) -> None:
        failure.trap(defer.TimeoutError)
        raise TimeoutError(f"{what} took longer than {seconds:g} s")
    return d.addTimeout(seconds, reactor).addErrback(timed_out)


class _Process(protocol.ProcessProtocol):
    """Collects output (bounded), fires `ended` at exit and `seen` when a marker line shows."""

    def __init__(self, marker: bytes | None, keep: int = 1 << 16) -> None:
        self.marker = marker
        self.keep = keep
        self.output = b""
        self.seen: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.output = (self.output + data)[-self.keep:]
        if self.marker is not None and not self.seen.called and self.marker in self.output:
            self.seen.callback(None)

    def processEnded(self, reason: Any) -> None:
        if self.marker is not None and not self.seen.called:
            self.seen.errback(RuntimeError(f"exited before it was ready: {self.output.decode(errors='replace')}"))
        self.ended.callback(reason.value)


def _signal(transport: Any, sig: int) -> None:
    try:
        transport.signalProcess(sig)
    except (error.ProcessExitedAlready, OSError):
        pass


def _stop_process(transport: Any, ended: defer.Deferred) -> defer.Deferred:
    """SIGCONT + SIGTERM, SIGKILL after `BOUND`; fires once the process has exited."""
    if ended.called:
        return defer.succeed(None)
    done: defer.Deferred[None] = defer.Deferred()
    ended.addBoth(lambda _: done.callback(None) if not done.called else None)
    timer = reactor.callLater(BOUND, _signal, transport, signal.SIGKILL)
    _signal(transport, signal.SIGCONT)
    _signal(transport, signal.SIGTERM)
    return done.addBoth(lambda _: timer.cancel() if timer.active() else None)


@attrs.frozen
class TlsFiles:
    """The broker's certificate, its key, and the CA that signed it (paths)."""

    ca: str
    certificate: str
    key: str


class TestCA:
    """A CA in `folder` (ca.pem, `path`) that issues server and client certificates."""

    def __init__(self, folder: str | Path, name: str = "cmegw test CA") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256()))
        self.path = str(self._write("ca.pem", self._pem(self.certificate)))

    def issue(self, names: Sequence[str] = ("localhost", "127.0.0.1"), stem: str = "server",
              client: bool = False) -> TlsFiles:
        """A server (or `client`) certificate for `names` (DNS names, IP addresses) and its key: stem.pem, stem.key."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        alt: list[x509.GeneralName] = []
        for n in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.certificate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client
                                                  else ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256()))
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return TlsFiles(ca=self.path, certificate=str(self._write(f"{stem}.pem", self._pem(certificate))),
                        key=str(self._write(f"{stem}.key", key_pem)))

    @staticmethod
    def _pem(certificate: Any) -> bytes:
        from cryptography.hazmat.primitives import serialization
        return certificate.public_bytes(serialization.Encoding.PEM)

    def _write(self, name: str, data: bytes) -> Path:
        path = self.folder / name
        path.write_bytes(data)
        return path


class Mosquitto:
    """A Mosquitto broker on a free port of 127.0.0.1, its files in `folder`."""

    def __init__(self, folder: str | Path, tls: TlsFiles | None = None,
                 users: dict[str, str] | None = None, require_certificate: bool = False,
                 persistent: bool = False) -> None:
        self.folder = Path(folder)
        #: Keep sessions and their queued QoS 1 messages over a restart (a head-end's persistent session).
        self.persistent = persistent
        self.tls = tls
        #: With `tls`: clients must show a certificate of the same CA.
        self.require_certificate = require_certificate
        self.users = users
        self.port = 0
        self._process: _Process | None = None
        self._transport: Any = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{'localhost' if self.tls else '127.0.0.1'}:{self.port}"

    def pause(self) -> None:
        """SIGSTOP: the broker holds still (accepts nothing, answers nothing) until `resume` (or `stop`)."""
        self._transport.signalProcess(signal.SIGSTOP)

    def resume(self) -> None:
        self._transport.signalProcess(signal.SIGCONT)

    @property
    def log(self) -> str:
        """What the broker wrote so far (its last 64 KiB)."""
        return self._process.output.decode(errors="replace") if self._process else ""

    def _config(self) -> str:
        persistence = (["persistence true", f"persistence_location {self.folder.resolve()}/"]
                       if self.persistent else ["persistence false"])
        lines = [f"user {pwd.getpwuid(os.getuid()).pw_name}", *persistence,
                 "log_dest stderr", "log_type all", f"listener {self.port} 127.0.0.1"]
        if self.users is None:
            lines.append("allow_anonymous true")
        else:
            passwords = self.folder / "passwords"
            passwords.write_text("")
            passwords.chmod(0o600)
            for user, password in self.users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password],
                               check=True, capture_output=True, timeout=BOUND)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        if self.tls:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.certificate}", f"keyfile {self.tls.key}",
                      f"require_certificate {str(self.require_certificate).lower()}"]
        return "\n".join(lines) + "\n"

    def start(self) -> defer.Deferred[None]:
        """Write the configuration, spawn the broker; fires once it runs (bounded by `BOUND`)."""
        if not os.access(MOSQUITTO, os.X_OK) or not shutil.which("mosquitto_sub"):
            raise SkipTest(f"{MOSQUITTO} or mosquitto_sub is absent (Debian's mosquitto, mosquitto-clients)")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        config = self.folder / "mosquitto.conf"
        config.write_text(self._config())
        self._process = _Process(b" running")
        self._transport = reactor.spawnProcess(self._process, MOSQUITTO, [MOSQUITTO, "-c", str(config)],
                                               env=os.environ.copy(), childFDs={0: "w", 1: "r", 2: "r"})
        def failed(failure: Any) -> Any:
            return self.stop().addCallback(lambda _: failure)
        return _bounded(self._process.seen, BOUND, "starting mosquitto").addErrback(failed)

    def stop(self) -> defer.Deferred[None]:
        """End the broker (SIGTERM, SIGKILL after `BOUND`); fires once it has exited.  The port stays for `start`."""
        if self._process is None:
            return defer.succeed(None)
        process, self._process = self._process, None
        return _stop_process(self._transport, process.ended)


@attrs.frozen
class Received:
    topic: str
    payload: bytes
    retain: bool


class Subscription:
    """A running ``mosquitto_sub``; `done` fires with the `Received` messages."""

    def __init__(self, process: _Process, transport: Any) -> None:
        self._process = process
        self._transport = transport
        self.done: defer.Deferred[list[Received]] = defer.Deferred()
        process.ended.addBoth(lambda _: self.done.callback(self.received()))

    def received(self) -> list[Received]:
        """The messages so far."""
        text = self._process.output.decode(errors="replace")
        complete = text if self._process.ended.called else text[:text.rfind("\n") + 1]  # not a line still coming
        found: list[list[str]] = []
        for line in complete.splitlines():
            if line.startswith("MSG "):
                found.append((line[4:].split(" ", 2) + [""])[:3])
            elif found and line and all(c in string.hexdigits for c in line.strip()):
                found[-1][2] += line  # the pty cut a long line: its hex digits go on
            elif found:
                found.append(["", "", ""])  # another line ends the message (a placeholder, dropped below)
        messages = []
        for retain, topic, payload in found:
            if topic:
                messages.append(Received(topic, bytes.fromhex(re.sub(r"[^0-9a-fA-F]", "", payload)), retain == "1"))
        return messages

    def stop(self) -> defer.Deferred[None]:
        return _stop_process(self._transport, self._process.ended)


def subscribe(broker: Mosquitto, topics: Sequence[str], count: int, timeout: float = BOUND,
              user: tuple[str, str] | None = None, session: str | None = None) -> defer.Deferred[Subscription]:
    """A ``mosquitto_sub`` for `count` messages (at most `timeout` s); fires once subscribed (stop it in cleanup)."""
    command = ["mosquitto_sub", "-h", "localhost" if broker.tls else "127.0.0.1", "-p", str(broker.port),
               "-q", "1", "-d", "-C", str(count), "-W", str(max(1, round(timeout))), "-F", "MSG %r %t %x"]
    if broker.tls:
        command += ["--cafile", broker.tls.ca]
    if user:
        command += ["-u", user[0], "-P", user[1]]
    if session:  # a persistent session: QoS 1 messages wait for us while we are away
        command += ["-c", "-i", session]
    for topic in topics:
        command += ["-t", topic]
    process = _Process(b"Subscribed (mid:", keep=1 << 22)
    # a pty: mosquitto_sub buffers a pipe, and "Subscribed" must be seen when it happens
    transport = reactor.spawnProcess(process, shutil.which("mosquitto_sub") or "mosquitto_sub", command,
                                     env=os.environ.copy(), usePTY=True)
    subscription = Subscription(process, transport)

    def failed(failure: Any) -> Any:
        return subscription.stop().addCallback(lambda _: failure)
    return (_bounded(process.seen, BOUND, "subscribing with mosquitto_sub")
            .addCallbacks(lambda _: subscription, failed))


def publish(broker: Mosquitto, topic: str, payload: bytes, retain: bool = False) -> defer.Deferred[None]:
    """Publish one message with ``mosquitto_pub`` (QoS 1); fires once it has exited (bounded)."""
    command = ["mosquitto_pub", "-h", "localhost" if broker.tls else "127.0.0.1", "-p", str(broker.port),
               "-q", "1", "-t", topic, "-m", payload.decode()] + (["-r"] if retain else [])
    if broker.tls:
        command += ["--cafile", broker.tls.ca]
    process = _Process(None)
    transport = reactor.spawnProcess(process, shutil.which("mosquitto_pub") or "mosquitto_pub", command,
                                     env=os.environ.copy(), childFDs={0: "w", 1: "r", 2: "r"})

    def failed(failure: Any) -> Any:
        return _stop_process(transport, process.ended).addCallback(lambda _: failure)
    return _bounded(process.ended, BOUND, "mosquitto_pub").addCallbacks(lambda _: None, failed)
