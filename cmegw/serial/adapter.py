# -*- test-case-name: tests.test_serial_adapter -*-
"""
The serial adapter behind an opened line: what it is, whether it hands over
received bytes at once, and the delivery slack it adds to a byte's arrival.

`prepare(fd, device)` is called once per open.  It asks the driver for low
latency (``ASYNC_LOW_LATENCY`` with ``TIOCGSERIAL``/``TIOCSSERIAL``), sets an
FTDI adapter's latency timer to 1 ms where sysfs lets us (else reads it), and
reads the adapter's USB vendor, product and driver from sysfs.  Nothing here
fails the line: a pty, a driver without the setting, a read-only sysfs file
are reported in words.

The slack (`AdapterInfo.slack`) is what the M-Bus timeouts add to the
standard's answer window: the FTDI latency timer (the chip holds received
bytes up to that long before it sends a short USB packet), a UART's receive
FIFO (a 16550 holds fewer bytes than its trigger level until 4 characters of
silence have passed), plus a scheduling margin for the reactor's turn.  The
delay between a request's write and the first byte cannot be measured without
a meter, so it is derived from those figures; the arbiter measures the
largest gap it sees inside replies (``reply_gap_peak``) to compare.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

import attrs

#: linux/serial.h: the ioctls and the flag; `flags` is the fifth int of struct serial_struct.
TIOCGSERIAL = 0x541E
TIOCSSERIAL = 0x541F
ASYNC_LOW_LATENCY = 1 << 13
_SERIAL_STRUCT_SIZE = 128  # at least sizeof(struct serial_struct) (72 on 64-bit)
_FLAGS = struct.Struct("i")
_FLAGS_OFFSET = 4 * _FLAGS.size

#: Major device numbers of Unix98 pty slaves (/dev/pts/N).
_PTY_MAJORS = range(136, 144)

#: The reactor's turn and the scheduler between a byte's delivery and the arbiter seeing it.
SCHEDULING_MARGIN = 0.005
#: The latency timer an FTDI adapter is set to, and what its driver uses when nobody sets it.
FTDI_LATENCY_WANTED_MS = 1
FTDI_LATENCY_DEFAULT_MS = 16
#: A USB adapter whose buffering we cannot read (CP210x, CH341, PL2303): assumed like an FTDI's default.
UNKNOWN_USB_LATENCY_MS = 16
#: Characters a UART's receive FIFO may hold back (16550: the receive timeout of 4 characters).
UART_FIFO_CHARACTERS = 4

KIND_PTY = "pty"
KIND_FTDI = "ftdi"
KIND_USB = "usb"
KIND_UART = "uart"
KIND_UNKNOWN = "unknown"


@attrs.frozen
class AdapterInfo:
    """What `prepare` found: the adapter in words, its low-latency state, its latency timer, its slack."""

    kind: str
    description: str
    #: "on", or why not, in words.
    low_latency: str
    #: The latency timer in ms where the adapter has one (FTDI), else None; and what was done with it.
    latency_timer: int | None = None
    latency_timer_note: str = ""
    #: Seconds of delivery slack independent of the baud rate, and characters a FIFO may hold back.
    fixed_slack: float = SCHEDULING_MARGIN
    fifo_characters: int = 0

    def slack(self, baud: int) -> float:
        """The adapter's delivery slack at `baud`, in seconds."""
        return self.fixed_slack + self.fifo_characters * 11 / baud


def is_pty(path: str) -> bool:
    try:
        return os.major(os.stat(path).st_rdev) in _PTY_MAJORS
    except OSError:
        return False


def set_low_latency(fd: int) -> str:
    """Ask the driver for ASYNC_LOW_LATENCY: "on", or why not in words (never raises)."""
    buf = bytearray(_SERIAL_STRUCT_SIZE)
    try:
        fcntl.ioctl(fd, TIOCGSERIAL, buf, True)
    except OSError as e:
        return _refused(e)
    (flags,) = _FLAGS.unpack_from(buf, _FLAGS_OFFSET)
    if flags & ASYNC_LOW_LATENCY:
        return "on"
    _FLAGS.pack_into(buf, _FLAGS_OFFSET, flags | ASYNC_LOW_LATENCY)
    try:
        fcntl.ioctl(fd, TIOCSSERIAL, bytes(buf))
        check = bytearray(_SERIAL_STRUCT_SIZE)
        fcntl.ioctl(fd, TIOCGSERIAL, check, True)
    except OSError as e:
        return _refused(e)
    if not _FLAGS.unpack_from(check, _FLAGS_OFFSET)[0] & ASYNC_LOW_LATENCY:
        return "not kept by the driver"
    return "on"


def _refused(e: OSError) -> str:
    if e.errno in (errno.ENOTTY, errno.EINVAL, errno.EOPNOTSUPP):
        return "not supported by the driver"
    if e.errno in (errno.EPERM, errno.EACCES):
        return "not allowed (permission denied)"
    return f"not supported ({os.strerror(e.errno) if e.errno else e})"


def latency_timer(tty: str, sysfs: Path) -> tuple[int | None, str]:
    """An FTDI's latency timer in ms (set to 1 where writable) and what was done, or (None, "")."""
    path = sysfs / "bus" / "usb-serial" / "devices" / tty / "latency_timer"
    try:
        current = int(path.read_text().strip())
    except (OSError, ValueError):
        return None, ""
    if current <= FTDI_LATENCY_WANTED_MS:
        return current, "as wanted"
    try:
        path.write_text(f"{FTDI_LATENCY_WANTED_MS}\n")
        current = int(path.read_text().strip())
    except PermissionError:
        return current, f"left at {current} ms: permission denied (a udev rule can set it)"
    except (OSError, ValueError) as e:
        return current, f"left at {current} ms: {e}"
    return current, f"set to {current} ms"


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _upwards(device_dir: Path) -> list[Path]:
    """A device's folder and its parents below /sys/devices."""
    chain = []
    for directory in (device_dir, *device_dir.parents):
        if directory.name in ("devices", ""):
            break
        chain.append(directory)
    return chain


def _usb_identity(device_dir: Path) -> tuple[str, str, str, str] | None:
    """(vendor id, product id, manufacturer, product) of the USB device above a tty's device, or None."""
    for directory in _upwards(device_dir):
        vendor = _read(directory / "idVendor")
        if vendor:
            return (vendor, _read(directory / "idProduct"), _read(directory / "manufacturer"),
                    _read(directory / "product"))
    return None


def _driver(device_dir: Path) -> str:
    """The driver of a tty's device; Linux 6's serial-base layer ("port", "ctrl") is looked through."""
    for directory in _upwards(device_dir):
        link = directory / "driver"
        if link.exists():
            driver = link.resolve()
            if driver.parent.parent.name != "serial-base":
                return driver.name
    return ""


def describe(tty: str, sysfs: Path) -> tuple[str, str]:
    """(kind, description in words) of tty `tty` (``ttyUSB0``) from sysfs."""
    device = sysfs / "class" / "tty" / tty / "device"
    if not device.exists():
        return KIND_UNKNOWN, f"{tty} (nothing about it in sysfs)"
    real = device.resolve()
    driver = _driver(real)
    usb = _usb_identity(real)
    if usb is None:
        return KIND_UART, f"serial port {tty}" + (f" (driver {driver})" if driver else "")
    vendor, product, maker, name = usb
    words = " ".join(w for w in (maker, name) if w) or "USB serial adapter"
    kind = KIND_FTDI if driver == "ftdi_sio" or vendor == "0403" else KIND_USB
    return kind, f"{words} (USB {vendor}:{product}" + (f", driver {driver})" if driver else ")")


def prepare(fd: int, device: str, sysfs: str | Path = "/sys") -> AdapterInfo:
    """Set low latency where the driver allows, and say what the adapter of `device` (open as `fd`) is."""
    low_latency = set_low_latency(fd)
    if is_pty(device):
        return AdapterInfo(KIND_PTY, "pseudo-terminal (simulated bus)", low_latency)
    root = Path(sysfs)
    tty = os.path.basename(os.path.realpath(device))
    kind, description = describe(tty, root)
    timer, note = latency_timer(tty, root)
    if timer is not None:
        return AdapterInfo(KIND_FTDI, description, low_latency, timer, note, _held_for(timer))
    if kind == KIND_UART:
        return AdapterInfo(kind, description, low_latency, fifo_characters=UART_FIFO_CHARACTERS)
    assumed = FTDI_LATENCY_DEFAULT_MS if kind == KIND_FTDI else UNKNOWN_USB_LATENCY_MS
    note = f"{'not readable' if kind == KIND_FTDI else 'none known'}: assumed {assumed} ms"
    return AdapterInfo(kind, description, low_latency, None, note, _held_for(assumed))


def _held_for(latency_ms: int) -> float:
    """The slack of a USB adapter that holds received bytes up to `latency_ms`."""
    return latency_ms / 1000 + SCHEDULING_MARGIN
