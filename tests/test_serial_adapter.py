"""Tests for cmegw.serial.adapter: low latency, the latency timer and the adapter's description on a fake sysfs."""

from __future__ import annotations

import os
from pathlib import Path

from twisted.trial.unittest import TestCase

from cmegw.serial import adapter
from cmegw.serial.adapter import (
    KIND_FTDI,
    KIND_PTY,
    KIND_UART,
    KIND_UNKNOWN,
    KIND_USB,
    SCHEDULING_MARGIN,
    prepare,
    set_low_latency,
)
from tests.support import open_pty

USB_PORT = "devices/pci0000:00/0000:00:14.0/usb1/1-2"


class FakeSysfs:
    """A /sys tree in a temporary folder: tty class links, USB device attributes, usb-serial's latency_timer."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def usb_tty(self, tty: str, driver: str, vendor: str, product: str, maker: str = "", name: str = "",
                latency: int | None = None) -> Path:
        usb = self.root / USB_PORT
        interface = usb / "1-2:1.0" / tty
        interface.mkdir(parents=True)
        for key, value in (("idVendor", vendor), ("idProduct", product), ("manufacturer", maker), ("product", name)):
            if value:
                (usb / key).write_text(value + "\n")
        self._driver(interface, driver)
        self._class_link(tty, interface)
        if latency is not None:
            port = self.root / "bus" / "usb-serial" / "devices" / tty
            port.mkdir(parents=True)
            (port / "latency_timer").write_text(f"{latency}\n")
            return port / "latency_timer"
        return interface

    def uart_tty(self, tty: str, driver: str) -> None:
        device = self.root / "devices" / "platform" / "serial8250" / tty
        device.mkdir(parents=True)
        self._driver(device, driver)
        self._class_link(tty, device)

    def _driver(self, device: Path, name: str) -> None:
        driver = self.root / "bus" / "drivers" / name
        driver.mkdir(parents=True, exist_ok=True)
        (device / "driver").symlink_to(driver)

    def _class_link(self, tty: str, device: Path) -> None:
        entry = self.root / "class" / "tty" / tty
        entry.mkdir(parents=True)
        (entry / "device").symlink_to(device)


class AdapterTests(TestCase):
    def setUp(self) -> None:
        self.sysfs = FakeSysfs(Path(self.mktemp()).absolute())
        self.sysfs.root.mkdir()
        master, slave, self.pty_path = open_pty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, slave)
        # The ioctls go to a pty (no such setting); sysfs says which adapter the device name is.
        self.fd = slave

    def test_pty_has_no_low_latency_setting(self) -> None:
        self.assertEqual(set_low_latency(self.fd), "not supported by the driver")
        info = prepare(self.fd, self.pty_path, self.sysfs.root)
        self.assertEqual((info.kind, info.description), (KIND_PTY, "pseudo-terminal (simulated bus)"))
        self.assertEqual(info.low_latency, "not supported by the driver")
        self.assertIsNone(info.latency_timer)
        self.assertEqual(info.slack(2400), SCHEDULING_MARGIN)

    def test_ftdi_latency_timer_set_to_one_ms(self) -> None:
        timer = self.sysfs.usb_tty("ttyUSB0", "ftdi_sio", "0403", "6001", "FTDI", "FT232R USB UART", latency=16)
        info = prepare(self.fd, "/dev/ttyUSB0", self.sysfs.root)
        self.assertEqual(info.kind, KIND_FTDI)
        self.assertEqual(info.description, "FTDI FT232R USB UART (USB 0403:6001, driver ftdi_sio)")
        self.assertEqual(timer.read_text().strip(), "1")
        self.assertEqual((info.latency_timer, info.latency_timer_note), (1, "set to 1 ms"))
        self.assertAlmostEqual(info.slack(2400), 0.001 + SCHEDULING_MARGIN)
        self.assertEqual(info.slack(300), info.slack(38400), "a latency timer does not depend on the baud rate")

    def test_read_only_latency_timer_is_read_and_said(self) -> None:
        timer = self.sysfs.usb_tty("ttyUSB1", "ftdi_sio", "0403", "6015", latency=16)
        timer.chmod(0o444)
        if os.access(timer, os.W_OK):
            self.skipTest("running as root: a read-only file is still writable")
        info = prepare(self.fd, "/dev/ttyUSB1", self.sysfs.root)
        self.assertEqual(info.latency_timer, 16)
        self.assertIn("permission denied", info.latency_timer_note)
        self.assertAlmostEqual(info.slack(2400), 0.016 + SCHEDULING_MARGIN)

    def test_latency_timer_that_cannot_be_written(self) -> None:
        """Root writes a read-only file; a sysfs that refuses the value is reported, never fatal."""
        self.sysfs.usb_tty("ttyUSB2", "ftdi_sio", "0403", "6001", latency=16)

        def refuse(path: Path, text: str) -> int:
            raise PermissionError(13, "Permission denied")

        self.patch(Path, "write_text", refuse)
        info = prepare(self.fd, "/dev/ttyUSB2", self.sysfs.root)
        self.assertEqual(info.latency_timer, 16)
        self.assertEqual(info.latency_timer_note, "left at 16 ms: permission denied (a udev rule can set it)")

    def test_other_usb_adapter_assumed_like_an_ftdi_default(self) -> None:
        self.sysfs.usb_tty("ttyUSB3", "cp210x", "10c4", "ea60", "Silicon Labs", "CP2102 USB to UART")
        info = prepare(self.fd, "/dev/ttyUSB3", self.sysfs.root)
        self.assertEqual(info.kind, KIND_USB)
        self.assertEqual(info.description, "Silicon Labs CP2102 USB to UART (USB 10c4:ea60, driver cp210x)")
        self.assertIn("assumed 16 ms", info.latency_timer_note)
        self.assertAlmostEqual(info.slack(2400), adapter.UNKNOWN_USB_LATENCY_MS / 1000 + SCHEDULING_MARGIN)

    def test_ftdi_without_a_readable_latency_timer(self) -> None:
        self.sysfs.usb_tty("ttyUSB5", "ftdi_sio", "0403", "6010", "FTDI", "Dual RS232")
        info = prepare(self.fd, "/dev/ttyUSB5", self.sysfs.root)
        self.assertEqual((info.kind, info.latency_timer), (KIND_FTDI, None))
        self.assertEqual(info.latency_timer_note, "not readable: assumed 16 ms")
        self.assertAlmostEqual(info.slack(2400), 0.016 + SCHEDULING_MARGIN)

    def test_uart_fifo_holds_four_characters(self) -> None:
        self.sysfs.uart_tty("ttyS0", "serial8250")
        info = prepare(self.fd, "/dev/ttyS0", self.sysfs.root)
        self.assertEqual((info.kind, info.description), (KIND_UART, "serial port ttyS0 (driver serial8250)"))
        self.assertAlmostEqual(info.slack(2400), SCHEDULING_MARGIN + 4 * 11 / 2400)
        self.assertAlmostEqual(info.slack(300), SCHEDULING_MARGIN + 4 * 11 / 300)

    def test_device_link_resolved_to_its_tty(self) -> None:
        """/dev/serial/by-id/... names the adapter's tty through a symlink."""
        self.sysfs.usb_tty("ttyUSB4", "ftdi_sio", "0403", "6001", latency=1)
        link = self.sysfs.root / "usb-FTDI_FT232R-if00-port0"
        link.symlink_to("/dev/ttyUSB4")
        info = prepare(self.fd, str(link), self.sysfs.root)
        self.assertEqual((info.latency_timer, info.latency_timer_note), (1, "as wanted"))

    def test_nothing_in_sysfs(self) -> None:
        info = prepare(self.fd, "/dev/ttyXYZ9", self.sysfs.root)
        self.assertEqual(info.kind, KIND_UNKNOWN)
        self.assertIn("nothing about it in sysfs", info.description)
        self.assertGreater(info.slack(2400), SCHEDULING_MARGIN, "an unknown adapter gets a USB adapter's slack")

    def test_closed_descriptor_is_reported_not_raised(self) -> None:
        master, slave, _ = open_pty()
        os.close(master)
        os.close(slave)
        self.assertTrue(set_low_latency(slave).startswith("not supported"))
