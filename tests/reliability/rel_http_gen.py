"""The input generator and the response oracle of the HTTP request path fuzzer (drivers:
rel_http_fuzz.py). See rel_http_fuzz's docstring for the method."""

from __future__ import annotations

import gzip
import json
import random
import re

from rel_fuzz import CORPUS, mutate
from rel_fuzz import corpus as _read_corpus

HTTP_CORPUS = CORPUS / "http"
_CORPORA: dict[str, list[bytes]] = {}


def corpus(name: str) -> list[bytes]:
    """A corpus file of rel_fuzz's (read once)."""
    if name not in _CORPORA:
        _CORPORA[name] = _read_corpus(name)
    return _CORPORA[name]

# ----------------------------------------------------------------------------- generator

ROUTES = [  # (path, methods the app serves, body kind)
    ("/write", ("POST",), "lp"), ("/api/v2/write", ("POST",), "lp"), ("/api/v1/write/arrow", ("POST",), "arrow"),
    ("/query", ("POST", "GET"), "query"), ("/sql", ("POST", "GET"), "sql"), ("/health", ("GET",), None),
    ("/ready", ("GET",), None), ("/stats", ("GET",), None), ("/ping", ("GET",), None),
    ("/metrics", ("GET",), None), ("/flush", ("POST",), None), ("/delete", ("POST",), "delete"),
    ("/measurements/{name}", ("DELETE",), None), ("/retention_policies", ("GET", "POST"), "policy"),
    ("/retention_policies/{name}", ("PUT", "PATCH", "DELETE"), "policy"), ("/cluster", ("GET",), None),
    ("/auth/token", ("POST",), "token"),
]
_ROUTE_WEIGHTS = [20, 8, 2, 14, 14, 3, 2, 2, 4, 1, 0.15, 3, 1, 2, 1, 1, 1]
_METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "TRACE", "CONNECT", "get", "PoSt",
            "PRI", "BREW", "", "G\xe9T", "POST POST"]
_VERSIONS = ["HTTP/1.1"] * 60 + ["HTTP/1.0", "HTTP/1.0", "HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "http/1.1",
                                  "HTTP/11", "HTTP/1.1 ", "HTTP/", "", "HTTP/1.1\x00"]
_ODD_PATHS = ["/", "*", "/nope", "//write", "/write/", "/WRITE", "/ping/../stats", "/%70ing", "/ping?",
              "http://x/ping", "/measurements/", "/measurements/a/b", "/retention_policies/", "/sql#frag",
              "/\xff\xfe", "/" + "a" * 5000, "/write%00", "/query\t", "/ping%2F..", "/measurements/%zz",
              "/measurements/" + "%41" * 50]
_NAMES = ["cpu", "mem", "fz0", "fz1", "disk", "weather", "m", "it's", "a b", "\u00e9t\u00e9", "", "x" * 300, "*"]
_PRECISIONS = ["ns"] * 6 + ["us", "u", "ms", "s", "s", "n", "m", "h", "", "xs", "NS", "1", "%C2%B5s", "\u00b5s"]
_CL_JUNK = ["-1", "+5", " 5 ", "5 5", "1, 1", "0x10", "1e3", "99999999999999999999", "\u0663", "\u00b2", "\uff15",
            "٣٣", "", "abc", "5\x00", "4294967296", "-0"]
_LP_LINES = [
    "cpu,host=h{h} usage={f},n={i}i,s=\"v{i}\",ok=true {ts}", "mem,host=h{h} used={i}i {ts}",
    "fz{h},t=a v={f} {ts}", "cpu,host=h{h} usage={f}", "disk,dev=sd{h} free={i}u {ts}",
    "weather,location=us\\ midwest temperature={f} {ts}",
]
_QUERY_OPS = ["Eq", "NotEq", "In", "NotIn", "Regex", "Exists", "NotExists", "Bad", "eq"]
_AGGS = ["Count", "Sum", "Mean", "Min", "Max", "First", "Last", "StdDev", "Variance", "Median", "Percentile",
         "Bogus", "mean"]
_SQL = [
    "SELECT * FROM cpu LIMIT {n}", "SELECT usage FROM cpu WHERE host = 'h{h}' ORDER BY time DESC LIMIT 5",
    "SELECT count(*), avg(usage) FROM cpu GROUP BY host", "SELECT max(n) FROM cpu WHERE time > now() - interval '{n} hours'",
    "SELECT time_bucket('5 minutes', time) AS b, count(*) FROM cpu WHERE time >= {ts} GROUP BY b LIMIT 10",
    "SHOW TABLES", "SELECT PERCENTILE_95(usage) FROM cpu", "SELECT * FROM fz{h} WHERE t IN ('a', 'b') LIMIT 3",
    "SELECT host, last(usage) FROM cpu GROUP BY host", "SELECT 1", "SELECT * FROM nope", "SELEC * FORM cpu",
    "SELECT usage FROM cpu WHERE time BETWEEN '2023-11-14T22:13:20Z' AND '2023-11-15' LIMIT 3",
    "SELECT * FROM cpu WHERE usage > 1 OR host = 'h1' LIMIT 5", "DROP TABLE cpu", "SELECT $1",
]
T0 = 1_700_000_000_000_000_000
_SEPS = ["\r\n"] * 20 + ["\n", "\n", "\r", "\r\r\n", "\n\r"]


def _lp_body(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.choice((1, 1, 2, 3, 10))):
        t = rng.choice(_LP_LINES)
        lines.append(t.format(h=rng.randrange(5), f=rng.choice(["1.5", "-0", "1e10", "nan", "3"]), i=rng.randrange(100),
                              ts=T0 + rng.randrange(100) * 10**9))
    if rng.random() < 0.3:
        lines.append(rng.choice(corpus("line_protocol.txt")).decode("utf-8", "replace"))
    return "\n".join(lines).encode()


def _query_body(rng: random.Random) -> bytes:
    if rng.random() < 0.3:
        return rng.choice(corpus("query.json"))
    q: dict = {"measurement": rng.choice(["cpu", "mem", "fz1", "nope", "", 5]),
               "time_range": rng.choice([{"start": T0, "end": T0 + 100 * 10**9}, {"start": 0, "end": 2**63 - 1},
                                         {"start": 5, "end": 1}, {"start": "x"}, {}, None, {"start": -2**63, "end": 2**64}])}
    if rng.random() < 0.4:
        op = rng.choice(_QUERY_OPS)
        f = {"key": rng.choice(["host", "t", "", "nope"]), "op": op}
        f["values" if op in ("In", "NotIn") else "value"] = rng.choice(["h1", ["h1", "h2"], "((", "^h.*", 3, None])
        q["tag_filters"] = [f]
    if rng.random() < 0.3:
        q["fields"] = rng.choice([["usage"], ["usage", "n"], [], "usage", [1]])
    if rng.random() < 0.4:
        agg = {"function": rng.choice(_AGGS), "field": rng.choice(["usage", "n", "s", "nope"])}
        if rng.random() < 0.5:
            agg["interval_nanos"] = rng.choice([60 * 10**9, 1, 0, -5, 10**30, "1m"])
        if rng.random() < 0.3:
            agg["percentile"] = rng.choice([95, 0, 100, 101, -1, "x"])
        q["aggregation"] = agg
    for k, vals in (("group_by", [["host"], ["t", "host"], "host"]), ("order", ["Desc", "Asc", "desc", "x"]),
                    ("limit", [1, 0, -1, 10**20, "5"]), ("offset", [0, 5, -3])):
        if rng.random() < 0.2:
            q[k] = rng.choice(vals)
    return json.dumps(q).encode()


def _sql_text(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return rng.choice(corpus("sql.txt")).decode()
    return rng.choice(_SQL).format(n=rng.choice([1, 5, 100]), h=rng.randrange(5), ts=T0)


def _body(kind: str | None, rng: random.Random) -> bytes:
    if kind is None:
        return b"" if rng.random() < 0.8 else rng.randbytes(rng.randrange(20))
    if kind == "lp":
        return _lp_body(rng)
    if kind == "query":
        return _query_body(rng)
    if kind == "sql":
        text = _sql_text(rng)
        return json.dumps({"query": text}).encode() if rng.random() < 0.2 else text.encode()
    if kind == "arrow":
        return rng.choice([b"", b"ARROW1\x00\x00", rng.randbytes(64), _arrow_sample()])
    if kind == "delete":
        obj = {"measurement": rng.choice(["fz0", "fz1", "nope", "", None]),
               "time_range": rng.choice([{"start": T0, "end": T0 + 10**9}, {"start": 1, "end": 0}, "x"])}
        if rng.random() < 0.3:
            obj[rng.choice(["tag_filters", "field_filters", "bogus"])] = rng.choice([[], [{"key": "t", "op": "Eq", "value": "a"}], 5])
        return json.dumps(obj).encode()
    if kind == "policy":
        obj = {"name": rng.choice(["p1", "p2", "", None]), "measurement": rng.choice(["fz0", "*", "nope"]),
               "duration": rng.choice(["30d", "12h", "1s", "x", -5, None, 10**30]),
               }
        if rng.random() < 0.3:
            obj["tier_after"] = rng.choice(["1h", "x", None, 0])
        return rng.choice([json.dumps(obj).encode(), b"[]", b"null", b"{"])
    if kind == "token":
        return rng.choice([b'{"username": "u", "password": "p"}', b"[1]", b"{", b""])
    return b""


_ARROW: list[bytes] = []


def _arrow_sample() -> bytes:
    if not _ARROW:
        import pyarrow as pa

        t = pa.table({"time": pa.array([T0, T0 + 10**9], pa.int64()), "usage": [1.0, 2.0]})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, t.schema) as w:
            w.write_table(t)
        _ARROW.append(sink.getvalue().to_pybytes())
    return _ARROW[0]


_BOMB: list[bytes] = []


def _gzip_variants(body: bytes, rng: random.Random) -> bytes:
    z = gzip.compress(body, 1)
    r = rng.random()
    if r < 0.5:
        return z
    if r < 0.7:
        return z[: rng.randrange(len(z))]  # truncated
    if r < 0.8:
        return z + rng.randbytes(rng.randrange(1, 10))  # trailing garbage
    if r < 0.9:
        if not _BOMB:
            _BOMB.append(gzip.compress(b"\0" * (24 << 20), 9))  # 24 MiB of zeros: ~24 KiB
        return _BOMB[0]
    return body  # declared gzip, is not


def _chunked(body: bytes, rng: random.Random) -> bytes:
    out, i = [], 0
    while i < len(body):
        n = rng.randint(1, max(1, len(body) - i))
        out.append(b"%x\r\n%s\r\n" % (n, body[i:i + n]))
        i += n
    r = rng.random()
    if r < 0.15:  # a bad size
        out.insert(rng.randrange(len(out) + 1), rng.choice([b"zz\r\nabc\r\n", b"-1\r\n", b"ffffffffffffffffff\r\n",
                                                            b"5\r\nab\r\n", b"\r\n", b"1;ext=\"x\r\nq\r\n",
                                                            b"0x5\r\nabcde\r\n", b"\xd9\xa3\r\nabc\r\n"]))
    tail = b"0\r\n\r\n"
    if r > 0.9:
        tail = rng.choice([b"0\r\nX-Trailer: 1\r\n\r\n", b"0\r\n", b"", b"0;x=y\r\n\r\n", b"00000\r\n\r\n"])
    return b"".join(out) + tail


def _request(rng: random.Random) -> bytes:
    """One request; 60% are well framed (only the route's own inputs vary), the rest draw
    framing attacks too."""
    clean = rng.random() < 0.6
    path, methods, kind = rng.choices(ROUTES, _ROUTE_WEIGHTS)[0]
    method = rng.choice(methods) if clean or rng.random() < 0.7 else rng.choice(_METHODS)
    if "{name}" in path:
        path = path.replace("{name}", rng.choice(["fz9", "p1", "p2", "nope", "a%20b", "%ff", "", "cpu%2Fx"]))
    if not clean and rng.random() < 0.1:
        path = rng.choice(_ODD_PATHS)
    qs = []
    if kind == "lp" or rng.random() < 0.1:
        if rng.random() < 0.7:
            qs.append("precision=" + rng.choice(_PRECISIONS[:-1] if clean else _PRECISIONS))
        if rng.random() < 0.3:
            qs.append(rng.choice(["db=x", "bucket=b&org=o", "precision=s&precision=ns", "%zz=1", "a", "=", "&&",
                                  "q=" + "x" * 3000, "db=%ff%fe"]))
    body = _body(kind, rng)
    if kind == "sql" and method == "GET":
        from urllib.parse import quote

        qs.append(rng.choice(["q=", "query="]) + quote(_sql_text(rng)))
        body = b""
    if kind == "query" and method == "GET" and rng.random() < 0.5:
        body = b""
    target = path + ("?" + "&".join(qs) if qs else "")
    version = "HTTP/1.1" if clean else rng.choice(_VERSIONS)
    sep = "\r\n" if clean else rng.choice(_SEPS)
    headers: list[str | bytes] = []
    if clean or rng.random() < 0.9:
        headers.append("Host: " + ("x" if clean else rng.choice(["x"] * 5 + ["localhost:8086", "", "a b", "x\x00"])))
    gz = rng.random() < 0.08
    if gz:
        body = _gzip_variants(body, rng)
        headers.append("Content-Encoding: " + rng.choice(["gzip", "gzip", "GZIP", "deflate", "br", "gzip, gzip"]))
    framing = rng.random() * (0.85 if clean else 1.0)
    if framing < 0.75:
        headers.append(f"Content-Length: {len(body)}")
    elif framing < 0.85:
        headers.append("Transfer-Encoding: " + rng.choice(["chunked"] * 6 + ["gzip, chunked", "chunked, chunked",
                                                                            "identity", "Chunked", "chunked "]))
        body = _chunked(body, rng)
    elif framing < 0.92:
        headers.append("Content-Length: " + rng.choice(_CL_JUNK + [str(len(body) + rng.randint(-3, 3))]))
    elif framing < 0.95:
        headers.append(f"Content-Length: {len(body)}")
        headers.append(rng.choice([f"Content-Length: {len(body)}", f"Content-Length: {len(body) + 1}",
                                   "Transfer-Encoding: chunked"]))
    # else: no framing header at all
    extra = [
        "Content-Type: " + rng.choice(["application/json", "text/plain", "application/json; charset=utf-8", "x"]),
        "Expect: 100-continue", "Connection: " + rng.choice(["close", "keep-alive", "upgrade", "Close, x", ""]),
        "Upgrade: " + rng.choice(["h2c", "websocket", "foo"]), "Authorization: " + rng.choice(
            ["Bearer x.y.z", "Basic Zm9vOmJhcg==", "Token abc", "Basic !!", ""]),
        "Accept-Encoding: gzip", "X-Forwarded-For: 1.2.3.4", "User-Agent: fuzz",
        " folded-continuation", "\tfolded-tab", "Bad Header", ": empty-name", "X: \x00", "X-Long: " + "v" * 70000,
        "X-Utf8: \u00e9\u0663", "Content-Length : 3", "Host: dup", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    weights = [6, 1, 3, 0.5, 1.5, 1, 1, 1, 0.3, 0.3, 0.3, 0.2, 0.2, 0.1, 0.5, 0.2, 0.3, 0.1, 0.1]
    if clean:
        extra, weights = extra[:8], weights[:8]
        extra[3] = "Upgrade: foo"
    for _ in range(rng.choice((0, 0, 1, 1, 2, 3))):
        headers.insert(rng.randrange(len(headers) + 1), rng.choices(extra, weights)[0])
    if not clean and rng.random() < 0.04:
        headers += [f"X-H{i}: {i}" for i in range(rng.choice((100, 1000, 5000)))]
    line = f"{method} {target} {version}" if clean or rng.random() < 0.94 else rng.choice(
        [f"{method} {target}", f"{method}  {target} {version}", f" {method} {target} {version}", target, method])
    head = sep.join([line, *(h if isinstance(h, str) else h.decode("latin-1") for h in headers)]) + sep + sep
    return head.encode("utf-8", "surrogateescape") + body


_CORPUS_CACHE: list[bytes] = []


def http_corpus() -> list[bytes]:
    """The seed corpus: one raw request sequence per file of corpus/http/."""
    if not _CORPUS_CACHE:
        _CORPUS_CACHE.extend(p.read_bytes() for p in sorted(HTTP_CORPUS.glob("*.http")))
    return _CORPUS_CACHE


class Case:
    """One fuzz case: the byte fragments to send, and whether to wait for the server's deadlines
    (a ``slow`` case: an incomplete request left for the server to time out) afterwards."""

    __slots__ = ("parts", "slow")

    def __init__(self, parts: list[bytes], slow: bool = False) -> None:
        self.parts = parts
        self.slow = slow

    @property
    def data(self) -> bytes:
        return b"".join(self.parts)


def generate(rng: random.Random) -> Case:
    """A seeded case: 1-4 pipelined requests, sometimes mutated, from the generator or the corpus."""
    r = rng.random()
    if r < 0.1 and http_corpus():
        data = rng.choice(http_corpus())
        data = mutate(data, rng, n=rng.choice((1, 2, 4, 8)))
    else:
        data = b"".join(_request(rng) for _ in range(rng.choice((1, 1, 1, 1, 2, 2, 3, 4))))
        if r < 0.28:
            data = mutate(data, rng, n=rng.choice((1, 2, 4)))
        elif r < 0.30:
            data = rng.randbytes(rng.randrange(1, 300))
    parts = [data]
    if rng.random() < 0.15 and len(data) > 1:  # sent in fragments: the server reads partial heads and bodies
        cuts = sorted({rng.randrange(1, len(data)) for _ in range(rng.randint(1, 4))})
        parts = [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)])]
    slow = rng.random() < 0.01
    if slow:  # an incomplete request: the server must answer 408 or close at its deadline
        parts.append(rng.choice([b"POST /write HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\nabc",
                                 b"GET /ping HTTP/1.1\r\nHo", b"POST /query HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab"]))
    return Case(parts, slow)


# ----------------------------------------------------------------------------- responses

_STATUS = re.compile(rb"HTTP/1\.[01] ([1-5]\d\d) [^\r\n]*\r\n")


class Problem(Exception):
    """A response (or the lack of one) that breaks the oracle."""


def parse_responses(buf: bytearray, methods: list[str], start: int, eof: bool, wire: bool = False) -> tuple[list, int, bool]:
    """Complete responses at the front of ``buf`` (removed from it): ``(responses, final count,
    upgraded)``; ``methods`` are the request methods the app saw on this connection in order
    (``start``: how many final responses came before), to frame answers to HEAD. Raises Problem."""
    out = []
    finals = start
    while buf:
        m = _STATUS.match(buf)
        if m is None:
            if len(buf) < 20 and b"HTTP/1.1 ".startswith(bytes(buf[:9])) and not eof:
                break
            raise Problem(f"not an HTTP response: {bytes(buf[:120])!r}")
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if eof:
                raise Problem(f"response head cut off: {bytes(buf[:200])!r}")
            break
        status = int(m.group(1))
        headers: dict[str, str] = {}
        for ln in bytes(buf[m.end():end]).split(b"\r\n"):
            if not ln:
                continue
            k, sep, v = ln.partition(b":")
            if not sep:
                raise Problem(f"bad response header line {ln!r}")
            headers[k.decode("latin-1").strip().lower()] = v.decode("latin-1").strip()
        pos = end + 4
        method = methods[finals] if status >= 200 and finals < len(methods) else "?"
        if status < 200 or status in (204, 304) or method == "HEAD":
            body = b""
        elif "content-length" in headers:
            n = int(headers["content-length"])
            if wire and n and buf.startswith(b"HTTP/1.1 ", pos) and method == "?":
                n = 0  # an answer to HEAD (the wire driver cannot see the method)
            if len(buf) < pos + n and wire and eof and len(buf) == pos and method == "?":
                n = 0  # the last answer, to HEAD
            if len(buf) < pos + n:
                if eof:
                    raise Problem(f"response body cut off: {bytes(buf[:200])!r}")
                break
            body = bytes(buf[pos:pos + n])
            pos += n
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            raise Problem("chunked response (the app always sends content-length)")
        else:  # delimited by the close
            if not eof:
                break
            body = bytes(buf[pos:])
            pos = len(buf)
        del buf[:pos]
        out.append((status, headers, body))
        if status == 101:
            return out, finals, True
        if status >= 200:
            finals += 1
    return out, finals, False


def _hypercorn_error(headers: dict, body: bytes) -> bool:
    """The answer to framing h11 refuses (rusts.protocols.http.strict_h11): a JSON error that
    starts "bad HTTP request: ", and the connection closed."""
    if headers.get("connection") != "close" or "json" not in headers.get("content-type", ""):
        return False
    try:
        return json.loads(body)["error"].startswith("bad HTTP request: ")
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def check_response(status: int, headers: dict, body: bytes) -> str | None:
    """What is wrong with one response, or None; "framing" for hypercorn's empty 4xx."""
    if status >= 500:
        if status == 503 and "retry-after" in headers:
            return None
        if status in (501, 505) and _hypercorn_error(headers, body):
            return "framing"  # h11: a transfer coding or HTTP version it does not implement
        return f"{status} answer: {body[:300]!r}"
    if 400 <= status < 500:
        if _hypercorn_error(headers, body):
            return "framing"  # hypercorn's answer to a request h11 cannot parse
        if not body:
            return None if headers.get("content-length", "0") != "0" else f"{status} without a JSON error"
        try:
            obj = json.loads(body)
        except ValueError:
            return f"{status} with a body that is not JSON: {body[:200]!r}"
        if not isinstance(obj, dict) or not isinstance(obj.get("error"), str):
            return f"{status} without an 'error' string: {body[:200]!r}"
        return None
    if body and "json" in headers.get("content-type", ""):
        try:
            json.loads(body)
        except ValueError:
            return f"{status} with invalid JSON: {body[:200]!r}"
    return None


