#!/usr/bin/env python3
"""
pyrelay, the bare Python relays gwbench measures beside the gateways (``--with-pyrelay``):
``--relay DEVICE PORT`` is an epoll loop with nothing but ``os.read``/``send`` between the pty
and one TCP client, the floor of a Python gateway; ``--thread-relay DEVICE PORT`` is two
threads in blocking calls, without a poll loop.  Standard library only.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import threading
import tty

#: As gwbench.py reads: at most this much per read.
READ_SIZE = 256 * 1024


RELAY_HIGH_WATER = 1 << 20


def serve_relay(device: str, port: int) -> int:
    """
    pyrelay: the least a Python pty<->TCP relay can do, as a reference beside the gateways.

    One epoll loop; a new client replaces the old one; a chunk is written at once and
    only what the kernel does not take waits for EPOLLOUT; a side with more than
    RELAY_HIGH_WATER waiting stops the other side's reading.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    serial = os.open(device, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    tty.setraw(serial)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    listener.setblocking(False)
    poller = select.epoll()
    poller.register(listener.fileno(), select.EPOLLIN)
    poller.register(serial, select.EPOLLIN)
    client: socket.socket | None = None
    waiting = {serial: bytearray()}
    peer_of: dict[int, int] = {}

    def interest(fd: int) -> int:
        events = select.EPOLLOUT if waiting[fd] else 0
        if len(waiting[peer_of[fd]]) < RELAY_HIGH_WATER if fd in peer_of else True:
            events |= select.EPOLLIN
        return events

    def update(*fds: int) -> None:
        for fd in fds:
            poller.modify(fd, interest(fd))

    def drop_client() -> None:
        nonlocal client
        if client is not None:
            poller.unregister(client.fileno())
            del waiting[client.fileno()]
            client.close()
            client = None
            peer_of.clear()
            waiting[serial].clear()
            update(serial)

    def forward(target: int, data: bytes) -> None:
        if not waiting[target]:
            try:
                data = data[os.write(target, data):]
            except BlockingIOError:
                pass
        if data:
            waiting[target] += data
            update(target, peer_of.get(target, target))

    while True:
        for fd, events in poller.poll():
            if fd == listener.fileno():
                try:
                    fresh, _address = listener.accept()
                except BlockingIOError:
                    continue
                drop_client()
                client = fresh
                client.setblocking(False)
                client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                waiting[client.fileno()] = bytearray()
                peer_of.update({client.fileno(): serial, serial: client.fileno()})
                poller.register(client.fileno(), select.EPOLLIN)
                update(serial)
                continue
            if fd not in waiting:
                continue
            if events & select.EPOLLOUT and waiting[fd]:
                try:
                    del waiting[fd][:os.write(fd, waiting[fd])]
                except BlockingIOError:
                    pass
                except OSError:
                    drop_client()
                    continue
                update(fd, peer_of.get(fd, fd))
            if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                try:
                    data = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if fd == serial:
                    if data and client is not None:
                        forward(client.fileno(), data)
                elif not data:
                    drop_client()
                else:
                    forward(serial, data)


def serve_thread_relay(device: str, port: int) -> int:
    """
    pyrelay with --pyrelay-threads: no poll loop at all.  The device is read by
    one thread and each client by another, all in blocking calls, so a byte
    wakes the thread that forwards it and a full pty holds the writer in the
    kernel (the flow control).  A new client replaces the old one.
    """
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))
    serial = os.open(device, os.O_RDWR | os.O_NOCTTY)
    tty.setraw(serial)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    current: list[socket.socket | None] = [None]

    def from_serial() -> None:
        while True:
            data = os.read(serial, READ_SIZE)
            client = current[0]
            if client is not None:
                try:
                    client.sendall(data)
                except OSError:
                    pass

    def to_serial(client: socket.socket) -> None:
        while True:
            try:
                data = client.recv(READ_SIZE)
            except OSError:
                break
            if not data:
                break
            while data:
                data = data[os.write(serial, data):]
        if current[0] is client:
            current[0] = None
        client.close()

    threading.Thread(target=from_serial, daemon=True).start()
    while True:
        client, _address = listener.accept()
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        old, current[0] = current[0], client
        if old is not None:
            try:
                old.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        threading.Thread(target=to_serial, args=(client,), daemon=True).start()



def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--relay"] and len(argv) == 3:
        return serve_relay(argv[1], int(argv[2]))
    if argv[:1] == ["--thread-relay"] and len(argv) == 3:
        return serve_thread_relay(argv[1], int(argv[2]))
    print("usage: gwbench_relay.py --relay|--thread-relay DEVICE PORT", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
