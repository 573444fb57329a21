"""How Hubbub's messages travel on core NATS: subject names and frames, without I/O.

Subjects
    A channel whose name is made only of ``A-Z a-z 0-9 _ -`` travels on
    ``hubbub.r.<name>``. Any other name (dots, spaces, ``*``, ``>``, non-ASCII, ...)
    travels on ``hubbub.b.<base64url of its UTF-8, unpadded>``, and the empty name on
    ``hubbub.e``. The second token keeps the three forms apart, so distinct channels
    never share a subject and no channel is ever a wildcard. The server's control-line
    limit (4 KiB by default) bounds names to about 2.9 KiB of UTF-8.

Frames
    Every message starts with a kind byte, the sender's node id and the sender's
    message sequence number (big-endian u64): 25 bytes of overhead. The sequence number
    lets a receiver drop duplicates: when the connection breaks before the server has
    confirmed a batch (the PONG after it), the shared sender re-sends the whole batch on
    the next connection, although the server may have delivered part of it already. A
    re-sent message keeps its number (numbers advance only when a batch is confirmed, and
    a re-sent batch starts with the same messages), and a receiver delivers a message
    only if its number is above the last one it delivered from that sender on that
    channel.

Large payloads
    The server refuses messages above its ``max_payload`` (announced in its INFO, 1 MiB
    by default), and Hubbub payloads may be larger. Rather than drop them, a message
    that does not fit in one frame (``0x00``) is split into consecutive parts (``0x01``),
    each carrying the part index and count (two big-endian u32) and a slice of the
    payload, every part within ``max_payload``. A sender publishes the parts of one
    message back to back on the channel's subject, and NATS keeps one connection's
    messages in order, so the receiver reassembles per (channel, sender) and delivers the
    payload when the last part arrives; payloads from one sender stay in order whatever
    their size. Part 0 always starts afresh (a re-sent batch), a part out of sequence
    discards what was gathered (this process subscribed mid-message, or the client
    dropped a part), and incomplete messages are bounded by the :class:`Reassembler`'s
    budget: beyond it the oldest is discarded and reported.
"""

from __future__ import annotations

import base64
import functools
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from hubbub.brokers.remote import NODE_ID_BYTES, logger

SUBJECT_PREFIX = "hubbub."
WHOLE = b"\x00"
PART = b"\x01"
_SEQ = struct.Struct(">Q")
_PART_INDEX = struct.Struct(">II")  # index, count
WHOLE_HEADER_BYTES = 1 + NODE_ID_BYTES + _SEQ.size
PART_HEADER_BYTES = WHOLE_HEADER_BYTES + _PART_INDEX.size
# A server announcing less than this could not carry a useful share of a payload per part.
MIN_MAX_PAYLOAD = 1024

_LITERAL = re.compile(r"[A-Za-z0-9_-]+")


@functools.lru_cache(maxsize=4096)
def subject_for(channel: str) -> str:
    """The NATS subject that carries ``channel`` (see the module doc); never a wildcard."""
    if _LITERAL.fullmatch(channel):
        return f"{SUBJECT_PREFIX}r.{channel}"
    if not channel:
        return f"{SUBJECT_PREFIX}e"
    raw = channel.encode("utf-8", "surrogatepass")
    return f"{SUBJECT_PREFIX}b.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode('ascii')}"


def frames_for(data: bytes, seq: int, max_payload: int) -> Iterator[bytes]:
    """The NATS messages that carry ``data`` (node id + payload), the sender's message
    number ``seq``, each within ``max_payload`` bytes (see the module doc)."""
    head = data[:NODE_ID_BYTES] + _SEQ.pack(seq)
    payload = data[NODE_ID_BYTES:]
    if WHOLE_HEADER_BYTES + len(payload) <= max_payload:
        yield WHOLE + head + payload
        return
    piece = max_payload - PART_HEADER_BYTES
    if piece < 1:
        raise ValueError(f"max_payload {max_payload} leaves no room for a part")
    count = -(-len(payload) // piece)
    for index in range(count):
        yield (
            PART
            + head
            + _PART_INDEX.pack(index, count)
            + payload[index * piece : (index + 1) * piece]
        )


@dataclass
class _Partial:
    seq: int
    count: int
    pieces: list[bytes] = field(default_factory=list)
    size: int = 0


class Reassembler:
    """Turns received frames back into ``node id + payload``, per (channel, sender):
    joins parts and drops what was already delivered (see the module doc).

    ``on_drop(channel, size)`` is called for each incomplete message discarded to stay
    within ``budget`` bytes.
    """

    def __init__(self, budget: int, on_drop: Callable[[str, int], None]) -> None:
        self.budget = budget
        self.on_drop = on_drop
        self.pending_bytes = 0
        self.duplicates = 0
        self._partial: dict[tuple[str, bytes], _Partial] = {}
        self._delivered: dict[tuple[str, bytes], int] = {}  # last seq, per channel and sender

    def feed(self, channel: str, frame: bytes) -> bytes | None:
        """The complete ``node id + payload`` that ``frame`` finishes, else None."""
        kind = frame[:1]
        if kind == WHOLE and len(frame) >= WHOLE_HEADER_BYTES:
            return self._whole(channel, frame)
        if kind == PART and len(frame) >= PART_HEADER_BYTES:
            return self._part(channel, frame)
        logger.debug("nats broker: ignoring a malformed frame on %r", channel)
        return None

    def _whole(self, channel: str, frame: bytes) -> bytes | None:
        node = frame[1 : 1 + NODE_ID_BYTES]
        key = (channel, node)
        if self._partial:
            # The sender moved on: what it left unfinished here will not be completed.
            self._discard(key)
        if self._duplicate(key, _SEQ.unpack_from(frame, 1 + NODE_ID_BYTES)[0]):
            return None
        return node + frame[WHOLE_HEADER_BYTES:]

    def _part(self, channel: str, frame: bytes) -> bytes | None:
        node = frame[1 : 1 + NODE_ID_BYTES]
        (seq,) = _SEQ.unpack_from(frame, 1 + NODE_ID_BYTES)
        index, count = _PART_INDEX.unpack_from(frame, WHOLE_HEADER_BYTES)
        key = (channel, node)
        partial = self._partial.get(key)
        if index == 0:
            # A re-sent batch starts its message again from part 0.
            self._discard(key)
            last = self._delivered.get(key)
            if last is not None and seq <= last:
                self.duplicates += 1
                return None  # its later parts find no partial and are ignored
            partial = self._partial[key] = _Partial(seq, count)
        elif (
            partial is None
            or seq != partial.seq
            or index != len(partial.pieces)
            or count != partial.count
        ):
            # Subscribed mid-message, an earlier part was dropped, or a duplicate.
            self._discard(key)
            logger.debug("nats broker: part %d/%d on %r out of sequence", index, count, channel)
            return None
        piece = frame[PART_HEADER_BYTES:]
        partial.pieces.append(piece)
        partial.size += len(piece)
        self.pending_bytes += len(piece)
        if index + 1 < count:
            self._keep_within_budget()
            return None
        self._discard(key)
        if self._duplicate(key, seq):
            return None
        return node + b"".join(partial.pieces)

    def _keep_within_budget(self) -> None:
        while self.pending_bytes > self.budget and self._partial:
            oldest = next(iter(self._partial))
            self.on_drop(oldest[0], self._partial[oldest].size)
            self._discard(oldest)

    def reset(self) -> None:
        """Discard incomplete messages (the connection that carried them is gone); what
        was delivered is remembered, so that re-sent batches are not delivered again."""
        self._partial.clear()
        self.pending_bytes = 0

    def forget(self, channel: str) -> None:
        """Discard everything about ``channel`` (it was unsubscribed)."""
        for key in [key for key in self._partial if key[0] == channel]:
            self._discard(key)
        for key in [key for key in self._delivered if key[0] == channel]:
            del self._delivered[key]

    def _duplicate(self, key: tuple[str, bytes], seq: int) -> bool:
        last = self._delivered.get(key)
        if last is not None and seq <= last:
            self.duplicates += 1
            return True
        self._delivered[key] = seq
        return False

    def _discard(self, key: tuple[str, bytes]) -> None:
        partial = self._partial.pop(key, None)
        if partial is not None:
            self.pending_bytes -= partial.size
