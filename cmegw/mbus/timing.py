# -*- test-case-name: tests.test_mbus_arbiter -*-
"""
EN 13757-2 timing of an M-Bus line: characters on the wire, the slave's
answer window, the timeouts the bus arbiter waits for a reply, and the floor
(the shortest time) of a transaction.  Pure arithmetic on the baud rate and
the line's delivery slack (no Twisted).

The slack is what the serial adapter adds to a byte's arrival: an FTDI's
latency timer, a UART's receive FIFO, the reactor's turn.  It belongs to the
line (`cmegw.serial.adapter` derives it from the adapter present; a setting
adds more for radio or repeater paths) and is passed in, in seconds.
"""

from __future__ import annotations

from cmegw.mbus import frames

#: Bits of one character on the wire: start, 8 data, even parity, stop.
BITS_PER_CHARACTER = 11
#: Latest start of a slave's answer after the request (EN 13757-2): bits and seconds.
ANSWER_DELAY_BITS = 330
ANSWER_DELAY_SECONDS = 0.050
#: Characters of silence, beyond the slack, after which a reply is taken as ended.
DEFRAGMENTATION_CHARACTERS = 3
#: Line idle between two telegrams (EN 60870-5-1: at least 33 bit times).
INTER_TELEGRAM_BITS = 33


def character_time(baud: int) -> float:
    """Seconds one character takes on the wire."""
    return BITS_PER_CHARACTER / baud


def first_byte_timeout(baud: int, slack: float) -> float:
    """
    Longest wait, after a request's last character, for the reply's first
    character to be read: 330 bit times + 50 ms, the character itself, the slack.
    """
    return (ANSWER_DELAY_BITS + BITS_PER_CHARACTER) / baud + ANSWER_DELAY_SECONDS + slack


def reply_timeout(baud: int, slack: float, characters: int = frames.MAX_TELEGRAM_LENGTH) -> float:
    """Longest wait for a whole reply of `characters` after the request's last character."""
    return first_byte_timeout(baud, slack) + characters * character_time(baud)


def defragmentation_timeout(baud: int, slack: float) -> float:
    """Silence after which bytes that arrived are taken as the whole reply."""
    return slack + DEFRAGMENTATION_CHARACTERS * character_time(baud)


def collision_settle(baud: int, slack: float) -> float:
    """
    How long to listen on after a clean single-character answer (E5) before
    taking it as the only one: bytes of a second slave answering the same
    request that began while the first answer was on its way to us (one
    character plus the slack), and at least the line idle the next request
    waits anyway (33 bit times), in which any byte is a second answer too.
    A collision of answers that overlap on the wire garbles the first one.
    """
    return max(INTER_TELEGRAM_BITS / baud, character_time(baud) + slack)


def transaction_floor(request: int, reply: int, baud: int) -> float:
    """
    The shortest an exchange can take on the wire: the request, the slave's
    minimum turnaround (11 bit times), the reply, the idle before the next.
    """
    return ((request + reply) * BITS_PER_CHARACTER + BITS_PER_CHARACTER + INTER_TELEGRAM_BITS) / baud


def silent_floor(request: int, baud: int) -> float:
    """
    The shortest an unanswered exchange can take: the request, then the
    answer window of EN 13757-2 (330 bit times + 50 ms) that must pass before
    silence is certain.
    """
    return (request * BITS_PER_CHARACTER + ANSWER_DELAY_BITS) / baud + ANSWER_DELAY_SECONDS


def exchange_floor(request: int, reply: int, baud: int, expect_reply: bool = True) -> float:
    """The floor of one exchange: answered (`transaction_floor`), silent, or a request alone."""
    if not expect_reply:
        return (request * BITS_PER_CHARACTER + INTER_TELEGRAM_BITS) / baud
    if not reply:
        return silent_floor(request, baud)
    return transaction_floor(request, reply, baud)
