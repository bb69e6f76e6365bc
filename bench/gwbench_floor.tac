# The dependency floor gwbench measures beside cmegw (bench/gwbench_floor.py starts it):
#
#     twistd -n --pidfile= -y bench/gwbench_floor.tac
#
# what cmegw's full service cannot do without, and nothing of cmegw: twistd, the reactor, a Klein
# application with one route on HTTP and on HTTPS (a self-signed EC P-256 certificate made at
# start with cryptography, as cmegw makes its own; the TLS context built at once, as cmegw checks
# its pair), a SerialPort open on the pty, and a telnet listener (twisted.conch.telnet with
# insults and recvline, as cmegw's console).  Everything listens on 127.0.0.1.  The device and
# ports come from the environment: GWBENCH_FLOOR_DEVICE, GWBENCH_FLOOR_HTTP, GWBENCH_FLOOR_HTTPS,
# GWBENCH_FLOOR_TELNET.
import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from klein import Klein
from twisted.application import service, strports
from twisted.application.internet import SSLServer
from twisted.conch import recvline
from twisted.conch.insults import insults
from twisted.conch.telnet import TelnetBootstrapProtocol, TelnetTransport
from twisted.internet import protocol, reactor, ssl
from twisted.internet.serialport import SerialPort
from twisted.web.server import Site

app = Klein()


@app.route("/")
def home(request):
    return "floor"


def self_signed():
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return key, certificate


class SerialLine(service.Service):
    """The pty held open by a SerialPort whose protocol swallows what it reads."""

    def startService(self):
        super().startService()
        self.port = SerialPort(protocol.Protocol(), os.environ["GWBENCH_FLOOR_DEVICE"], reactor, baudrate=2400)

    def stopService(self):
        super().stopService()
        self.port.loseConnection()


key, certificate = self_signed()
options = ssl.CertificateOptions(privateKey=key, certificate=certificate, raiseMinimumTo=ssl.TLSVersion.TLSv1_2)
options.getContext()
site = Site(app.resource())
console = protocol.ServerFactory()
console.protocol = lambda: TelnetTransport(TelnetBootstrapProtocol, insults.ServerProtocol, recvline.HistoricRecvLine)

application = service.Application("gwbench-floor")
strports.service(f"tcp:{os.environ['GWBENCH_FLOOR_HTTP']}:interface=127.0.0.1", site).setServiceParent(application)
SSLServer(int(os.environ["GWBENCH_FLOOR_HTTPS"]), site, options, interface="127.0.0.1").setServiceParent(application)
strports.service(f"tcp:{os.environ['GWBENCH_FLOOR_TELNET']}:interface=127.0.0.1", console).setServiceParent(
    application)
SerialLine().setServiceParent(application)
