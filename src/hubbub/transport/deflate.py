"""permessage-deflate (RFC 7692), as Hubbub offers it: compressed once per broadcast.

The server answers every offer it accepts with ``server_no_context_takeover`` (each
message is compressed alone, so one compressed frame suits every client that accepted
the same window size: a broadcast is compressed once, see
:meth:`hubbub.outgoing.OutFrame.deflated`) and ``client_no_context_takeover`` (RFC
7692 §7.1.1.2 lets a server ask it even when the client did not offer it): a client's
messages are inflated alone too, so a connection holds no zlib state between messages,
idle or not. Where the client lets the server choose its window (a bare
``client_max_window_bits``, as browsers send it), the server asks for
``--compression-window-bits``.
"""

from __future__ import annotations

import zlib

from hubbub.errors import CloseCode

NAME = "permessage-deflate"
_TAIL = b"\x00\x00\xff\xff"


class Negotiated:
    """What one accepted offer settled: the response header and both windows."""

    __slots__ = ("client_bits", "header", "server_bits")

    def __init__(self, server_bits: int, client_bits: int, header: bytes) -> None:
        self.server_bits = server_bits  # the window the server compresses with
        self.client_bits = client_bits  # the window the client compresses with
        self.header = header


def negotiate(offers: bytes, window_bits: int) -> Negotiated | None:
    """The first permessage-deflate offer in ``Sec-WebSocket-Extensions`` that Hubbub
    accepts, or None (then the connection is not compressed)."""
    for offer in offers.decode("latin-1").split(","):
        name, *raw = (part.strip() for part in offer.split(";"))
        if name.lower() != NAME:
            continue
        params: dict[str, str | None] = {}
        for item in raw:
            key, sep, value = item.partition("=")
            key = key.strip().lower()
            if key in params:
                params = {"": None}  # a repeated parameter: decline this offer
                break
            params[key] = value.strip().strip('"') if sep else None
        accepted = _accept(params, window_bits)
        if accepted is not None:
            return accepted
    return None


def _bits(value: str | None) -> int | None:
    # 8 is valid in RFC 7692, but zlib's raw deflate cannot honour it (it uses 9).
    if value is None or not value.isdigit() or not 9 <= int(value) <= 15:
        return None
    return int(value)


def _accept(params: dict[str, str | None], window_bits: int) -> Negotiated | None:
    known = {
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
    }
    if not params.keys() <= known:
        return None
    for flag in ("server_no_context_takeover", "client_no_context_takeover"):
        if params.get(flag) is not None:
            return None  # these take no value
    response = [NAME, "server_no_context_takeover", "client_no_context_takeover"]
    server_bits = 15
    if "server_max_window_bits" in params:
        bits = _bits(params["server_max_window_bits"])
        if bits is None:
            return None
        server_bits = bits
        response.append(f"server_max_window_bits={bits}")
    client_bits = 15
    if "client_max_window_bits" in params:
        value = params["client_max_window_bits"]
        if value is None:
            client_bits = window_bits
        else:
            bits = _bits(value)
            if bits is None:
                return None
            client_bits = min(bits, window_bits)
        response.append(f"client_max_window_bits={client_bits}")
    return Negotiated(server_bits, client_bits, "; ".join(response).encode())


def inflate(data: bytes, window_bits: int, max_size: int) -> bytes | int:
    """One compressed message, inflated alone (no context takeover); a close code
    instead if it is bigger than ``max_size`` (1009) or not valid deflate data (1007)."""
    inflater = zlib.decompressobj(wbits=-window_bits)
    try:
        out = inflater.decompress(data + _TAIL, max_size + 1)
    except zlib.error:
        return CloseCode.INVALID_DATA
    if len(out) > max_size:
        return CloseCode.MESSAGE_TOO_BIG
    return out
