"""Autobahn|Testsuite cases 12.* and 13.* (permessage-deflate) redone with a real, unmodified
client library, Python `websockets`, against tickcast's `/echo` route. Run by
tests/compression.rs with the interpreter of the suite's virtualenv (TICKCAST_TEST_PYTHON).

Usage: compression_echo.py payloads WS_URL
       compression_echo.py offers WS_URL OFFERS_JSON
Prints one JSON line (what the client saw) and exits 0 unless the script itself broke; the
verdict is the Rust test's, from that line.

`payloads` is 12.x: five payload kinds (Autobahn's JSON, text, bitmap, HTML and a random
binary one, generated here instead of read from its data files) times Autobahn's MSG_SIZES
table (sizes 16 to 131072, then 8192 to 131072 auto-fragmented into 256 to 32768-byte frames),
sent with the default offer and echoed back identical (same type, length and SHA-1, as
Autobahn compares). `offers` is 13.x: each offer of OFFERS_JSON (a list of named lists of
ClientPerMessageDeflateFactory keyword arguments, one factory per offer element, in
preference order) on its own connection, what the server answered, and the JSON payload over
a part of MSG_SIZES on it.

Differences from Autobahn, by design: fewer messages per size (a byte budget instead of 1000,
so the run takes seconds), and each size's messages are sent while the echoes are read
(pipelined) rather than one at a time, which also puts several compressed messages in one of
the server's reads. websockets compresses every message on a connection that negotiated the
extension; whether each echoed frame came compressed is read off the frame (RSV1) by wrapping
the negotiated extension's `decode` method on the instance: it observes and calls through,
the library itself is not changed.
"""
import asyncio
import hashlib
import json
import random
import sys
import zlib

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import OP_BINARY, OP_TEXT

# Autobahn's case12_x_x.py MSG_SIZES: (payload length, auto-fragment size; 0 = one frame).
MSG_SIZES = [
    (16, 0), (64, 0), (256, 0), (1024, 0), (4096, 0), (8192, 0), (16384, 0), (32768, 0),
    (65536, 0), (131072, 0),
    (8192, 256), (16384, 256), (32768, 256), (65536, 256), (131072, 256),
    (131072, 1024), (131072, 4096), (131072, 32768),
]
# 13.x runs this part of the table on each offer.
OFFER_SIZES = [(16, 0), (256, 0), (4096, 0), (16384, 0), (131072, 0), (65536, 256),
               (131072, 4096)]
# tickcast's deflate.min_bytes default: shorter echoes go plain.
MIN_BYTES = 128
CORPUS_BYTES = 256 * 1024


def count_for(size, budget):
    """Messages of one size: about `budget` bytes, 3 to 60 messages."""
    return max(3, min(60, budget // size))


# --- payloads: generated stand-ins for Autobahn's data files --------------------------------

def json_corpus(rng):
    """Like data1.json: a large JSON document of records (compresses about 5-8 times)."""
    syms = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT", "AVAXUSDT"]
    rows, size = [], 0
    while size < CORPUS_BYTES:
        row = {
            "id": len(rows), "sym": rng.choice(syms), "side": rng.choice(["buy", "sell"]),
            "px": "%.2f" % rng.uniform(0.1, 70000), "qty": "%.4f" % rng.uniform(0, 50),
            "ts": 1796420232938163 + rng.randrange(10**9),
            "flags": rng.sample(["maker", "taker", "ioc", "fok", "post", "reduce"], 2),
            "venue": {"name": rng.choice(["XNAS", "BATS", "EDGX"]), "lat_us": rng.randrange(900)},
        }
        rows.append(row)
        size += len(json.dumps(row)) + 2
    return json.dumps({"trades": rows}, indent=1).encode()


WORDS = ("Habe nun ach Philosophie Juristerei und Medizin leider auch Theologie durchaus "
         "studiert mit heißem Bemühn da steh ich armer Tor bin so klug als wie zuvor heiße "
         "Magister Doktor gar zieh schon an die zehen Jahr herauf herab und quer krumm meine "
         "Schüler Nase sehe daß wir nichts wissen können Größe Übermut Ärger Öl Straße "
         "Mühe fürwahr Geist Natur Wesen Welt Teufel Hölle Glück").split()
EXOTIC = ["κόσμε", "日本語", "€", "😀", "Ωmega", "naïve", "Ελλάδα", "中文", "🚀", "ﬁ"]


def text_corpus(rng):
    """Like Goethe's Faust I: German prose (umlauts, ß) with some Greek, CJK and emoji."""
    out, size = [], 0
    while size < CORPUS_BYTES:
        n = rng.randrange(4, 12)
        line = " ".join(rng.choice(EXOTIC) if rng.random() < 0.06 else rng.choice(WORDS)
                        for _ in range(n))
        line = line[0].upper() + line[1:] + rng.choice([".", ",", "!", ";", ":"]) + "\n"
        out.append(line)
        size += len(line.encode())
    return "".join(out).encode()


def html_corpus(rng):
    """Like data1.html: markup, attributes, entities, a few non-ASCII characters."""
    out, size = ["<!DOCTYPE html>\n<html lang=\"de\"><head><meta charset=\"utf-8\">"
                 "<title>Kurse</title></head><body>\n"], 0
    while size < CORPUS_BYTES:
        tag = rng.choice(["div", "p", "span", "li", "td"])
        cls = rng.choice(["row", "cell price", "note", "nav-item active", "quote"])
        words = " ".join(rng.choice(WORDS + ["&amp;", "&nbsp;", "Zürich", "—", "Ω"])
                         for _ in range(rng.randrange(2, 9)))
        piece = '<%s class="%s" data-id="%d">%s <a href="/q/%d?x=%d">mehr</a></%s>\n' % (
            tag, cls, rng.randrange(10**6), words, rng.randrange(999), rng.randrange(99), tag)
        out.append(piece)
        size += len(piece.encode())
    out.append("</body></html>\n")
    return "".join(out).encode()


def bitmap_corpus(rng):
    """Like lena512.bmp: an 8-bit greyscale image (bands and tiles, a little noise), binary."""
    w = 512
    rows = []
    for y in range(CORPUS_BYTES // w):
        rows.append(bytes(
            (((x - 256) ** 2 + (y - 200) ** 2) >> 11) * 9 % 200 + ((x >> 5) + (y >> 5)) % 2 * 40
            + (rng.randrange(16) if rng.random() < 0.03 else 0)
            for x in range(w)))
    return b"BM" + bytes(52) + b"".join(rows)


def random_corpus(rng):
    """Incompressible binary: the server must send its echo plain (it would not shrink)."""
    return rng.randbytes(CORPUS_BYTES)


KINDS = [  # (name, corpus, text?)
    ("json", json_corpus, True),
    ("text", text_corpus, True),
    ("bitmap", bitmap_corpus, False),
    ("html", html_corpus, True),
    ("random", random_corpus, False),
]


class Slicer:
    """Autobahn's sendOne: consecutive slices of the corpus, wrapping around. Text slices are
    moved to UTF-8 character boundaries and padded with spaces to the exact length."""

    def __init__(self, corpus, text):
        self.data, self.text, self.ptr = corpus, text, 0

    def take(self, n):
        d = self.data
        end = self.ptr + n
        chunk = (d + d)[self.ptr:end] if end > len(d) else d[self.ptr:end]
        self.ptr = end % len(d)
        if not self.text:
            return chunk
        start = 0
        while start < len(chunk) and chunk[start] & 0xC0 == 0x80:
            start += 1
        chunk = chunk[start:]
        while True:
            try:
                chunk.decode()
                break
            except UnicodeDecodeError:
                chunk = chunk[:-1]
        return chunk + b" " * (n - len(chunk))


# --- one connection ------------------------------------------------------------------------

class Echo:
    """A connection to /echo and what it saw."""

    def __init__(self, ws):
        self.ws = ws
        self.exts = ws.protocol.extensions
        self.deflate = bool(self.exts)
        # RSV1 of each data frame the server sent, in order.
        self.rsv1 = []
        if self.deflate:
            ext = self.exts[0]
            decode = ext.decode
            bits = ext.remote_max_window_bits

            def observed(frame, *, max_size=None):
                if frame.opcode in (OP_TEXT, OP_BINARY):
                    self.rsv1.append(frame.rsv1)
                    if frame.rsv1 and bits < 15:
                        self.check_window(frame.data, bits)
                return decode(frame, max_size=max_size)

            ext.decode = observed
        # Messages count once their echo is checked: "sent_compressed" went out compressed
        # (all of them once the extension is agreed), "echo_compressed" came back so, and
        # "echo_over_min" is at least deflate.min_bytes long (the server compressed it, even
        # if it then went plain because it did not shrink).
        self.stats = {"sent": 0, "sent_compressed": 0, "echo_compressed": 0, "echo_plain": 0,
                      "echo_over_min": 0, "compressed_under_min": 0, "window_checked": 0,
                      "window_errors": []}

    def check_window(self, data, bits):
        """Whether a compressed server frame keeps to the agreed `server_max_window_bits`.

        websockets cannot tell: zlib inflating a whole message into one buffer resolves a
        distance from the output itself, whatever its window. Inflating into 64-byte pieces
        makes zlib resolve each distance from its window of 2**bits bytes plus at most 64, so
        a frame compressed with a larger window fails ("invalid distance too far back")."""
        self.stats["window_checked"] += 1
        d = zlib.decompressobj(wbits=-bits)
        rest = bytes(data) + b"\x00\x00\xff\xff"
        try:
            while rest and not d.eof:
                d.decompress(rest, 64)
                rest = d.unconsumed_tail
        except zlib.error as e:
            if len(self.stats["window_errors"]) < 3:
                self.stats["window_errors"].append("%d-byte frame: %s" % (len(data), e))

    async def roundtrip(self, payloads, text, frag):
        """Sends `payloads` (bytes; text messages as UTF-8) and checks each echo as Autobahn
        does: same type, length and SHA-1. Returns an error string or None."""

        async def fragments(p):
            for i in range(0, len(p), frag):
                yield p[i:i + frag]

        async def sender():
            for i, p in enumerate(payloads):
                if not frag:
                    await self.ws.send(p, text=text)
                elif i % 2:
                    # An async iterable is sent as a fragmented message too.
                    await self.ws.send(fragments(p), text=text)
                else:
                    # Byte fragments sent as text: a UTF-8 character may be cut between two
                    # frames (RFC 6455 §5.6 allows it), as well as the compressed stream.
                    await self.ws.send([p[j:j + frag] for j in range(0, len(p), frag)],
                                       text=text)

        send = asyncio.ensure_future(sender())
        try:
            for i, p in enumerate(payloads):
                got = await self.ws.recv()
                if isinstance(got, str) != text:
                    return "message %d: type %s, sent %s" % (
                        i, type(got).__name__, "text" if text else "binary")
                raw = got.encode() if text else got
                if len(raw) != len(p):
                    return "message %d: length %d, sent %d" % (i, len(raw), len(p))
                if hashlib.sha1(raw).digest() != hashlib.sha1(p).digest():
                    return "message %d: SHA-1 %s, sent %s" % (
                        i, hashlib.sha1(raw).hexdigest(), hashlib.sha1(p).hexdigest())
                self.count_echo(len(p))
            await send
        finally:
            send.cancel()
        return None

    def count_echo(self, n):
        s = self.stats
        s["sent"] += 1
        if not self.deflate:
            s["echo_plain"] += 1
            return
        s["sent_compressed"] += 1
        rsv1 = self.rsv1[s["sent"] - 1]
        s["echo_compressed" if rsv1 else "echo_plain"] += 1
        if n >= MIN_BYTES:
            s["echo_over_min"] += 1
        elif rsv1:
            s["compressed_under_min"] += 1


def describe(e):
    if isinstance(e, ConnectionClosed):
        rcvd = e.rcvd
        return "%s (server close %s %r)" % (
            type(e).__name__, rcvd.code if rcvd else None, rcvd.reason if rcvd else None)
    return "%s: %s" % (type(e).__name__, e)


async def open_echo(url, extensions):
    ws = await connect(url, open_timeout=30, close_timeout=10, ping_interval=None,
                       compression=None if extensions is not None else "deflate",
                       extensions=extensions, max_size=1 << 20)
    return Echo(ws)


async def run_sizes(e, kind, sizes, budget, rng):
    """One kind over `sizes` on connection `e`; a result row per size."""
    name, make, text = kind
    slicer = Slicer(make(rng), text)
    rows = []
    for size, frag in sizes:
        payloads = [slicer.take(size) for _ in range(count_for(size, budget))]
        try:
            error = await e.roundtrip(payloads, text, frag)
        except Exception as ex:  # the row says what broke; the connection is gone
            error = describe(ex)
        rows.append({"kind": name, "size": size, "frag": frag, "count": len(payloads),
                     "error": error})
        if error:
            break
    return rows


async def payloads():
    rng = random.Random(12)
    out = {"rows": [], "by_kind": {}}
    for kind in KINDS:
        e = await open_echo(URL, None)
        out["extensions"] = e.ws.response.headers.get("Sec-WebSocket-Extensions")
        out["rows"] += await run_sizes(e, kind, MSG_SIZES, 1 << 18, rng)
        out["by_kind"][kind[0]] = e.stats
        await e.ws.close()
    return out


async def offers(spec):
    rng = random.Random(13)
    out = []
    for name, factories in spec:
        exts = [ClientPerMessageDeflateFactory(**f) for f in factories]
        e = await open_echo(URL, exts)
        row = {"name": name,
               "offer": e.ws.request.headers.get("Sec-WebSocket-Extensions"),
               "response": e.ws.response.headers.get("Sec-WebSocket-Extensions"),
               "agreed": None}
        if e.deflate:
            x = e.exts[0]
            row["agreed"] = {
                "server_no_context_takeover": x.remote_no_context_takeover,
                "client_no_context_takeover": x.local_no_context_takeover,
                "server_max_window_bits": x.remote_max_window_bits,
                "client_max_window_bits": x.local_max_window_bits,
            }
        row["rows"] = await run_sizes(e, KINDS[0], OFFER_SIZES, 1 << 16, rng)
        row["stats"] = e.stats
        await e.ws.close()
        out.append(row)
    return {"offers": out, "bounds": await bounds()}


async def bounds():
    """deflate.inflate_ratio_max with a real client: a message that inflates over 100 times
    its compressed size is refused (1009) once it is over 16 KiB inflated, and accepted under
    that floor."""
    out = {}
    e = await open_echo(URL, None)
    out["floor"] = await e.roundtrip([b"x" * 16384], True, 0)
    out["floor_stats"] = e.stats
    try:
        await e.roundtrip([b"x" * 65536], True, 0)
        out["over_ratio"] = "echoed"
    except ConnectionClosed as ex:
        out["over_ratio"] = {"code": ex.rcvd.code if ex.rcvd else None,
                             "reason": ex.rcvd.reason if ex.rcvd else None}
    await e.ws.close()
    return out


async def main():
    if MODE == "payloads":
        result = await payloads()
    else:
        result = await offers(json.loads(sys.argv[3]))
    print(json.dumps(result))


MODE, URL = sys.argv[1], sys.argv[2]
asyncio.run(asyncio.wait_for(main(), 120))
