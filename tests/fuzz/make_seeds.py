#!/usr/bin/env python3
"""Writes the hand-made seed inputs into corpus/<target>/seed-*. Re-run after changing the
input formats in checks.rs; fuzzing and `cargo fuzz cmin` grow and shrink the rest.

Formats (see checks.rs): http = [headers_max, header_bytes_sel, split] + request;
frame = [limit_sel, c1, c2, c3] + client bytes; deflate = [limit_sel, ratio_sel, c1, c2, c3] +
client bytes; protocol = the text message; filter = [limits_sel] + filter text [+ 0 + data].
"""
import os
import struct
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
MASK = bytes([0x37, 0xFA, 0x21, 0x3D])


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


# --- http -----------------------------------------------------------------------------------
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
BROWSER = (
    "GET /ws?token=abc HTTP/1.1\r\nHost: gateway.example.com\r\nConnection: Upgrade\r\n"
    "Pragma: no-cache\r\nCache-Control: no-cache\r\n"
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/126.0 Safari/537.36\r\n"
    "Upgrade: websocket\r\nOrigin: https://app.example.com\r\nSec-WebSocket-Version: 13\r\n"
    "Accept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n"
    "Cookie: session=1\r\nSec-WebSocket-Key: " + KEY + "\r\n"
    "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
)
MINIMAL = (
    "GET /ws HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\n"
    "Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: " + KEY + "\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)
HTTP = {
    "browser-upgrade": BROWSER,
    "minimal-upgrade": MINIMAL,
    "echo-upgrade": MINIMAL.replace("/ws", "/echo"),
    "upgrade-version-8": MINIMAL.replace("Version: 13", "Version: 8"),
    "upgrade-no-key": MINIMAL.replace("Sec-WebSocket-Key: " + KEY + "\r\n", ""),
    "upgrade-bad-key": MINIMAL.replace(KEY, "short=="),
    "upgrade-post": MINIMAL.replace("GET", "POST", 1),
    "upgrade-http10": MINIMAL.replace("HTTP/1.1", "HTTP/1.0"),
    "upgrade-two-keys": MINIMAL.replace("\r\n\r\n", "\r\nSec-WebSocket-Key: " + KEY + "\r\n\r\n"),
    "curl-health": "GET /health HTTP/1.1\r\nHost: 127.0.0.1:18080\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n",
    "head-metrics": "HEAD /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
    "http10-keepalive": "GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "publish-body": "POST /v1/publish HTTP/1.1\r\nHost: 127.0.0.1:18080\r\nContent-Type: application/json\r\n"
    'Content-Length: 41\r\n\r\n{"topic":"orders.acme","data":{"px":150}}',
    "publish-chunked": "POST /v1/publish HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "cl-and-te": "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
    "cl-conflict": "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    "http2-version": "GET / HTTP/2.0\r\n\r\n",
    "bare-lf": "GET /ws HTTP/1.1\nHost: a\nConnection: close\n\n",
    "pipelined": "GET /health HTTP/1.1\r\nHost: a\r\n\r\nGET /health HTTP/1.1\r\nHost: a\r\n\r\n",
    "two-hosts": "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
}
for i, (name, req) in enumerate(sorted(HTTP.items())):
    raw = req.encode()
    write("http", name, bytes([64, 0, (i * 37) % 256]) + raw)
write("http", "tiny-limit", bytes([64, 128 + 40, 5]) + MINIMAL.encode())
write("http", "few-headers", bytes([2, 0, 9]) + MINIMAL.encode())


# --- frame ----------------------------------------------------------------------------------
def frame(opcode, payload=b"", fin=True, mask=MASK, length=None, rsv=0):
    """A client frame; `mask=None` sends it unmasked, `length` forces 16/64-bit lengths, `rsv`
    sets reserved bits (0x40 is RSV1, permessage-deflate's "compressed")."""
    out = bytes([(0x80 if fin else 0) | rsv | opcode])
    m = 0x80 if mask is not None else 0
    n = len(payload)
    if length is None:
        length = 7 if n < 126 else 16 if n <= 0xFFFF else 64
    if length == 7:
        out += bytes([m | n])
    elif length == 16:
        out += bytes([m | 126]) + struct.pack(">H", n)
    else:
        out += bytes([m | 127]) + struct.pack(">Q", n)
    if mask is None:
        return out + payload
    return out + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


TEXT, BINARY, CLOSE, PING, PONG, CONT = 1, 2, 8, 9, 10, 0
OPS = [
    b'{"op":"subscribe","id":1,"topics":["trades.BTCUSDT","bbo.*"]}',
    b'{"op":"ping","id":2}',
    b'{"op":"publish","id":3,"topic":"zz0","data":1}',
]
FRAMES = {
    "text-hello": frame(TEXT, b"hello"),
    "ops": b"".join(frame(TEXT, op) for op in OPS),
    "binary": frame(BINARY, bytes([1, 2])),
    "ping-pong": frame(PING, b"ka") + frame(PONG, b""),
    "close-code-reason": frame(CLOSE, struct.pack(">H", 1000) + b"bye"),
    "close-empty": frame(CLOSE),
    "close-bad-code": frame(CLOSE, struct.pack(">H", 1005)),
    "fragmented-text": frame(TEXT, b'{"op":', fin=False)
    + frame(PING, b"x")
    + frame(CONT, b'"ping"', fin=False)
    + frame(CONT, b"}"),
    "fragmented-utf8-split": frame(TEXT, "a€".encode()[:2], fin=False) + frame(CONT, "a€".encode()[2:]),
    "fragmented-binary": frame(BINARY, b"ab", fin=False) + frame(CONT, b"cd"),
    "len16": frame(TEXT, b"x" * 200),
    "len64": frame(BINARY, b"y" * 300, length=64),
    "len16-nonminimal": frame(TEXT, b"z", length=16),
    "unmasked": frame(TEXT, b"hello", mask=None),
    "zero-mask": frame(TEXT, "κόσμε".encode(), mask=bytes(4)),
    "invalid-utf8": frame(TEXT, b"ok\xc0\xaf"),
    "continuation-first": frame(CONT, b"x"),
    "too-large": frame(BINARY, b"q" * 1500),
}
for i, (name, stream) in enumerate(sorted(FRAMES.items())):
    # 64 KiB limit (index 13); chunk sizes vary per seed.
    write("frame", name, bytes([13, i % 7, (i * 13) % 256, 255]) + stream)
write("frame", "bytewise-small-limit", bytes([10, 0, 0, 0]) + frame(TEXT, b"x" * 200) + frame(CLOSE))

# --- deflate --------------------------------------------------------------------------------
# Indices into checks.rs's DEFLATE_LIMITS and RATIOS.
L16, L1000, L16K, L64K, L1M = 2, 6, 9, 12, 14
R1, R100, R1000, R100K = 0, 4, 6, 7
NOT_NEGOTIATED = 0x38
RSV1, RSV2 = 0x40, 0x20


def pmd(data, wbits=15, level=6):
    """`data` as a permessage-deflate payload (RFC 7692 §7.2.1: sync flush, 00 00 ff ff cut)."""
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits)
    out = c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def pmd_final(data):
    """Ending with a BFINAL block then 0x00, as libdeflate-based senders do (§7.2.3.4)."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(zlib.Z_FINISH) + b"\x00"


def pmd_fragments(data, n):
    """A websockets-style fragmented message: each fragment compressed and sync-flushed on its
    own (the 00 00 ff ff kept but on the last), then an empty final fragment."""
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    step = max(1, len(data) // n)
    parts = [c.compress(data[i:i + step]) + c.flush(zlib.Z_SYNC_FLUSH)
             for i in range(0, len(data), step)]
    last = c.flush(zlib.Z_SYNC_FLUSH)[:-4]
    out = frame(TEXT, parts[0], fin=False, rsv=RSV1)
    out += b"".join(frame(CONT, p, fin=False) for p in parts[1:])
    return out + frame(CONT, last)


SUB = OPS[0]
BOOK = b'{"op":"publish","id":7,"topic":"md.book","data":{"levels":[' + b",".join(
    b'{"px":"%d.25","qty":"1.000"}' % (100 + i) for i in range(60)) + b"]}}"
BOMB = pmd(b" " * (1 << 20))
Z = pmd(SUB)
DEFLATE = {
    "text": (L64K, R100, frame(TEXT, pmd(SUB), rsv=RSV1)),
    "binary": (L64K, R100, frame(BINARY, pmd(bytes(range(256)) * 4), rsv=RSV1)),
    "book-window9": (L64K, R100, frame(TEXT, pmd(BOOK, wbits=9), rsv=RSV1)),
    "final-block": (L64K, R100, frame(TEXT, pmd_final(BOOK), rsv=RSV1)),
    "fragmented-split": (L64K, R100, frame(TEXT, Z[:5], fin=False, rsv=RSV1) + frame(PING, b"p")
                         + frame(CONT, Z[5:9], fin=False) + frame(CONT, Z[9:])),
    "fragmented-websockets": (L64K, R100, pmd_fragments(BOOK, 4)),
    # RFC 7692 §7.2.3.1-§7.2.3.4: "Hello" compressed, twice without context takeover, in a
    # stored block, and ending with a BFINAL block.
    "rfc-examples": (L64K, R100, frame(TEXT, bytes.fromhex("f248cdc9c90700"), rsv=RSV1)
                     + frame(TEXT, bytes.fromhex("f248cdc9c90700"), rsv=RSV1)
                     + frame(TEXT, bytes.fromhex("000500faff48656c6c6f00"), rsv=RSV1)
                     + frame(TEXT, bytes.fromhex("f348cdc9c9070000"), rsv=RSV1)),
    "empty-payload": (L64K, R100, frame(TEXT, b"", rsv=RSV1) + frame(BINARY, b"\x00", rsv=RSV1)),
    "mixed-plain-compressed": (L64K, R100, frame(TEXT, SUB) + frame(TEXT, pmd(BOOK), rsv=RSV1)
                               + frame(BINARY, b"ab") + frame(BINARY, pmd(b"cd" * 300), rsv=RSV1)),
    "bomb-too-big": (L64K, R100, frame(TEXT, BOMB, rsv=RSV1)),
    "bomb-ratio": (L1M, R100, frame(TEXT, BOMB, rsv=RSV1)),
    "ratio-floor-ok": (L64K, R100, frame(TEXT, pmd(b"x" * 16384), rsv=RSV1)),
    "ratio-floor-over": (L64K, R100, frame(TEXT, pmd(b"x" * 16385), rsv=RSV1)),
    "ratio-1": (L64K, R1, frame(TEXT, pmd(BOOK), rsv=RSV1)),
    "at-limit": (L1000, R100, frame(BINARY, pmd(b"q" * 1000), rsv=RSV1)),
    "over-limit": (L1000, R100, frame(BINARY, pmd(b"q" * 1001), rsv=RSV1)),
    "compressed-over-limit": (L16, R100, frame(BINARY, pmd(bytes(range(64))), rsv=RSV1)),
    "big-then-small": (L1M, R100K, frame(BINARY, pmd(b"ab" * 150000), rsv=RSV1)
                       + frame(TEXT, pmd(SUB), rsv=RSV1)),
    # A final stored block announcing 9 bytes, none sent: the inflater's own 9-byte tail would
    # be read as them (checks.rs, TAIL_READ_AS_DATA_ACCEPTED).
    "tail-read-as-data": (L64K, R100, frame(BINARY, bytes.fromhex("010900f6ff"), rsv=RSV1)),
    "not-deflate": (L64K, R100, frame(TEXT, b"\xff\xff\xff\xff", rsv=RSV1)),
    "btype-reserved": (L64K, R100, frame(TEXT, b"\x07\x00", rsv=RSV1)),
    "truncated": (L64K, R100, frame(TEXT, pmd(BOOK)[:40], rsv=RSV1)),
    "invalid-utf8-inside": (L64K, R100, frame(TEXT, pmd(b"ok\xc3\x28"), rsv=RSV1)),
    "utf8-cut-at-end": (L64K, R100, frame(TEXT, pmd("a€".encode()[:-1]), rsv=RSV1)),
    "rsv1-continuation": (L64K, R100, frame(TEXT, b'{"op":', fin=False)
                          + frame(CONT, b'"ping"}', rsv=RSV1)),
    "rsv1-ping": (L64K, R100, frame(PING, b"x", rsv=RSV1)),
    "rsv1-pong": (L64K, R100, frame(PONG, b"", rsv=RSV1)),
    "rsv1-close": (L64K, R100, frame(CLOSE, struct.pack(">H", 1000), rsv=RSV1)),
    "rsv2": (L64K, R100, frame(TEXT, Z, rsv=RSV2)),
    "rsv1-not-negotiated": (L64K, R100 | NOT_NEGOTIATED, frame(TEXT, Z, rsv=RSV1)),
}
for i, (name, (limit, ratio, stream)) in enumerate(sorted(DEFLATE.items())):
    write("deflate", name, bytes([limit, ratio, i % 5, (i * 29) % 256, 255]) + stream)

# --- protocol -------------------------------------------------------------------------------
PROTO = [
    b'{"op":"subscribe","id":1,"topics":["trades.BTCUSDT","bbo.*"]}',
    b'{"op":"subscribe","id":13,"topics":["ok.topic","bad..topic","bad#","a.>.b"]}',
    b'{"op":"subscribe","id":12,"topics":[]}',
    b'{"op":"subscribe","id":11}',
    b'{"op":"unsubscribe","id":2,"topics":["bbo.*","trades.BTCUSDT"]}',
    b'{"op":"publish","id":7,"topic":"orders.acme","data":{"px": 1.50e2, "qty":3}}',
    b'{"op":"publish","topic":"orders.acme","data":"fire and forget"}',
    b'{"op":"publish","id":9,"topic":"orders.acme"}',
    b'{"op":"publish","id":"a\\"b\\u00e9","topic":"x","data":[null,true,{"id":1}]}',
    b'{"op":"ping"}',
    b'{"op":"ping","id":1.50}',
    b'{"op":"ping","id":"p-1"}',
    b'{"op":"ping","id":-1.0e3}',
    b'{"op":"ping","id":null}',
    b'{"op":"ping","id":true}',
    b'{"op":"ping","id":16,"extra":1}',
    b'{"op":"dance","id":15}',
    b'{"op":"x","id":007,',
    b'{nope',
    b' { "op" : "ping" , "topics" : [ "a" ] } ',
    b'{"op":"auth","id":1,"token":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.sig"}',
    b'{"op":"auth","token":"tk_abc"}',
    b'{"op":"subscribe","id":2,"topics":["md.x","md.*"],"since":{"md.x":{"seq":1041,"epoch":"9f3a0c0000000001"},"md.y":{"seq":0,"epoch":"zz"}}}',
    b'{"op":"publish","id":3,"topic":"orders.new","data":{"px":1},"idem":"ord-17"}',
    b'{"op":"unsubscribe","topics":["a"],"since":{}}',
    b'{"op":"subscribe","id":1,"topics":["signals.>"],"filter":{"strategy":{"in":["mom","arb"]},"score":{"gte":0.8}}}',
    b'{"op":"subscribe","id":1,"topics":["a"],"filter":null}',
    b'{"op":"subscribe","id":1,"topics":["a"],"filter":{"a":{"gtx":1}}}',
    b'{"op":"unsubscribe","id":1,"topics":["a"],"filter":{"a":1}}',
]
for i, msg in enumerate(PROTO):
    write("protocol", "%02d" % i, msg)

# --- proxy ----------------------------------------------------------------------------------
# [mode, split] + bytes: even mode a connection's first bytes (PROXY header), odd mode forwarded
# header lines ("\n" between lines; mode & 2: Forwarded instead of X-Forwarded-For; mode >> 2:
# one of four trusted sets).
SIG2 = b"\r\n\r\n\x00\r\nQUIT\n"


def v2(cmd, fam, block):
    return SIG2 + bytes([0x20 | cmd, fam]) + struct.pack(">H", len(block)) + block


IN4 = bytes([192, 0, 2, 7, 10, 0, 0, 1]) + struct.pack(">HH", 56324, 8080)
IN6 = bytes(15) + b"\x07" + bytes(15) + b"\x01" + struct.pack(">HH", 1, 2)
ALPN = b"\x01\x00\x08http/1.1"
GET = b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n"
FF = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
PROXY_HEADERS = {
    "v1-tcp4": b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 8080\r\n" + GET,
    "v1-tcp6": ("PROXY TCP6 %s %s 65535 65535\r\n" % (FF, FF)).encode(),
    "v1-unknown-longest": ("PROXY UNKNOWN %s %s 65535 65535\r\n" % (FF, FF)).encode(),
    "v1-too-long": b"PROXY UNKNOWN " + b"f" * 120,
    "v1-bare-lf": b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\n",
    "v1-bad-port": b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 2\r\n",
    "v1-partial": b"PROXY TCP4 192.0",
    "v2-inet": v2(1, 0x11, IN4) + GET,
    "v2-inet6-tlv": v2(1, 0x21, IN6 + ALPN),
    "v2-local": v2(0, 0x00, b""),
    "v2-unix": v2(1, 0x31, bytes(216)),
    "v2-short-block": v2(1, 0x21, bytes(35)),
    "v2-bad-version": SIG2 + b"\x11\x11\x00\x0c" + IN4,
    "v2-huge-length": SIG2 + b"\x21\x11\xff\xff",
    "v2-partial": v2(1, 0x11, IN4)[:20],
    "tls-client-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "http": GET,
    "propfind": b"PROPFIND / HTTP/1.1\r\n",
}
for i, (name, raw) in enumerate(PROXY_HEADERS.items()):
    write("proxy", "header-" + name, bytes([0, (i * 29) % 256]) + raw)
FORWARDED = {
    "xff-chain": (1, b"6.6.6.6, 198.51.100.7, 127.0.0.1"),
    "xff-lines": (1, b"1.1.1.1\n203.0.113.5:4711\n[2001:db8::5]:80\n10.0.0.7"),
    "xff-invalid": (5, b"unknown, 10.0.0.9"),
    "xff-all-trusted": (5, b"10.9.9.9, 192.168.1.1"),
    "xff-v6-any": (9, b"2001:db8::1, ::ffff:127.0.0.1"),
    "fwd-rfc7239": (3, b'for=192.0.2.60;proto=http;by=203.0.113.43, for="[2001:db8:cafe::17]:4711"'),
    "fwd-quoted-comma": (7, b'for=192.0.2.43;x="a,for=6.6.6.6", for=10.0.0.1'),
    "fwd-twice": (3, b"for=1.2.3.4;for=5.6.7.8"),
    "fwd-escape": (15, b'for="1.2\\.3.4", for=_hidden, for=unknown'),
}
for name, (mode, raw) in FORWARDED.items():
    write("proxy", name, bytes([mode, 0]) + raw)
# --- filter ---------------------------------------------------------------------------------
# limits_sel: bits 0-1 bytes (16, 256, 4096, 65536), 2-3 depth (1, 2, 4, 32), 4-5 clauses
# (1, 4, 32, 1024), 6-7 in (1, 3, 128, 65536). 0xAA: 4096 B, depth 4, 32 tests, 128 values.
DEFAULTS = 0xAA
FILTERS = [
    (DEFAULTS, b'{"strategy":{"in":["mom","arb"]},"score":{"gte":0.8}}', b'{"strategy":"mom","score":0.85}'),
    (DEFAULTS, b'{"book.side":"bid","px":{"gt":100,"lte":200.5}}', b'{"book":{"side":"bid"},"px":150}'),
    (DEFAULTS, b'{"or":[{"a":null},{"b":{"exists":false}},{"and":[{"c":true},{"d":{"ne":"x"}}]}]}', b'[1,2]'),
    (DEFAULTS, b'{"id":18446744073709551615,"x":{"lt":-1.5e300}}', b'{"id":18446744073709551615,"x":-1e308}'),
    (DEFAULTS, b'{"s":"\\u00e9\\"","\\u0073":{"in":[null,false,1,1.0,"1"]}}', b'{"s":"\xc3\xa9\\""}'),
    (DEFAULTS, b'null', b'{}'),
    (DEFAULTS, b'{}', b''),
    (DEFAULTS, b'{"a":{"gtx":1}}', b''),
    (DEFAULTS, b'{"a":1,"a":2}', b''),
    (DEFAULTS, b'{"a..b":1}', b''),
    (DEFAULTS, b'{"a":[1,2]}', b''),
    (DEFAULTS, b'{"and":[{"or":[{"and":[{"or":[{"a":1}]}]}]}]}', b''),
    (0x00, b'{"a":1,"b":2}', b'{"a":1,"b":2}'),
    (0x40, b'{"sym":{"in":["x","y","z","w"]}}', b'{"sym":"w"}'),
    (0xFF, b'[' * 200 + b']' * 200, b''),
    (0xFF, b'{"a":' * 100 + b'1' + b'}' * 100, b''),
]
for i, (sel, text, data) in enumerate(FILTERS):
    write("filter", "%02d" % i, bytes([sel]) + text + (b"\0" + data if data else b""))

# --- tls ------------------------------------------------------------------------------------
# [suite (0-2 TLS 1.3, 3-5 TLS 1.2), c1, c2, c3] + operations (tls_checks.rs, `build`):
# 0 [n] data; 1 [typ, pad, n] data; 2 [level, desc]; 3 [request]; 4 [sel]; 5 [n] raw;
# 6 [pos] tamper; 7 [v1, v2, n] data.
def data(b):
    return bytes([0, len(b)]) + b


REQ = b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n"
TLS = {
    "data": data(REQ) + data(b"second"),
    "close-notify": data(b"bye") + bytes([2, 1, 0]) + data(b"after"),
    "key-update-requested": data(b"a") + bytes([3, 1]),
    "key-update-not-requested": bytes([3, 0]) + data(b"then"),
    "key-update-bad-request": bytes([3, 2]),
    "fatal-alert": bytes([2, 2, 40]),
    "warning-user-canceled": bytes([2, 1, 90]) + data(b"x"),
    "warnings-too-many": bytes([2, 1, 90]) * 5,
    "alert-unknown-level": bytes([2, 3, 0]),
    "padding": bytes([1, 23, 3, 4]) + b"ping",
    "padding-at-limit": bytes([1, 23, 244, 35]) + bytes(35),
    "padding-over-limit": bytes([1, 23, 245, 0]),
    "all-zero-inner": bytes([1, 0, 2, 0]),
    "ccs-inside": bytes([1, 20, 0, 1, 1]),
    "heartbeat": bytes([1, 24, 0, 1, 1]),
    "handshake-client-hello": bytes([1, 22, 0, 4, 1, 0, 0, 0]),
    "new-session-ticket": bytes([1, 22, 0, 4, 4, 0, 0, 0]),
    "key-update-long": bytes([1, 22, 0, 6, 24, 0, 0, 2, 0, 0]),
    "big-record": bytes([4, 245]) + bytes([4, 250]),
    "tampered": data(b"hello") + bytes([6, 17]),
    "raw-ccs": bytes([5, 6, 20, 3, 3, 0, 1, 1]),
    "raw-overflow-header": bytes([5, 5, 23, 3, 3, 0xFF, 0xFF]),
    "raw-partial": data(b"x") + bytes([5, 3, 23, 3, 3]),
    "version-ignored": bytes([7, 0x12, 0x34, 2]) + b"ok",
}
for i, (name, ops) in enumerate(sorted(TLS.items())):
    for suite in (0, 2, 4, 5):
        # One byte at a time, 7 then 100 bytes, and everything in one read.
        pieces = [(0, 0, 0), (6, 99, 6), (255, 255, 255)][(i + suite) % 3]
        write("tls", f"{name}-suite{suite}", bytes([suite, *pieces]) + ops)
# The client's Finished first in the stream (suite byte >= 128, TLS 1.3: 132-134), so the
# hand-over from rustls to the record layer happens in the fuzzed reads.
for name in ("data", "key-update-requested", "tampered", "fatal-alert", "close-notify"):
    for suite, pieces in ((132, (0, 0, 0)), (133, (44, 9, 255)), (134, (255, 255, 255))):
        write("tls", f"finished-{name}-suite{suite}", bytes([suite, *pieces]) + TLS[name])
