"""Line protocol parser: columnar output, errors, precision, type conflicts, incremental form,
and the vectorised fast path against the exact per-line parser on generated input."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rusts.errors import ProtocolError
from rusts.model import FieldType
from rusts.protocols.line_protocol import exact as _lp_exact
from rusts.protocols import line_protocol as lp
from rusts.protocols.line_protocol import PRECISIONS, LineProtocolParser, parse

T0 = 1_451_606_400_000_000_000
TSBS = (b"cpu,hostname=host_0,region=eu-west-1,datacenter=eu-west-1a,rack=6,os=Ubuntu16.10,"
        b"arch=x64,team=SF,service=19,service_version=1,service_environment=test "
        b"usage_user=58.13,usage_system=2.62,usage_idle=24.0,usage_nice=17.9,usage_iowait=63.12,"
        b"usage_irq=41.75,usage_softirq=66.3,usage_steal=90.2,usage_guest=8.7,"
        b"usage_guest_nice=44.01 1451606400000000000")


def rows(batch) -> list[tuple]:
    """(line, measurement, tags, {field: (type, value)}, time) per row, in line order."""
    out = []
    for s in batch.series:
        for i in range(len(s)):
            fields = {}
            for name, col in s.columns.items():
                if col.mask is None or col.mask[i]:
                    v = col.values[i]
                    fields[name] = (col.type, v.item() if hasattr(v, "item") else v)
            out.append((int(s.line_numbers[i]), s.measurement, s.tags, fields,
                        int(s.timestamps[i])))
    return sorted(out, key=lambda r: r[0])


def errors(batch) -> list[tuple]:
    return [(e.line_number, e.original_line, e.error_message) for e in batch.errors]


def check_shape(batch) -> None:
    """Invariants every batch must hold."""
    keys = [(s.measurement, s.tags) for s in batch.series]
    assert len(keys) == len(set(keys)), "one SeriesRows per series"
    for s in batch.series:
        assert list(s.tags) == sorted(s.tags) and len({k for k, _ in s.tags}) == len(s.tags)
        assert s.timestamps.dtype == np.int64 and s.line_numbers.dtype == np.int64
        assert (np.diff(s.line_numbers) > 0).all(), "rows in input order"
        assert s.columns, "a row without fields"
        for col in s.columns.values():
            assert len(col.values) == len(s)
            assert col.values.dtype == col.type.dtype
            assert col.mask is None or (col.mask.dtype == bool and not col.mask.all())
        present = np.zeros(len(s), dtype=bool)
        for col in s.columns.values():
            present |= True if col.mask is None else col.mask
        assert present.all(), "every row has at least one field"


# ----------------------------------------------------------------------------- basics


def test_tsbs_line_is_one_columnar_series() -> None:
    body = b"\n".join(TSBS.replace(b"1451606400000000000", str(T0 + i).encode())
                      for i in range(3)) + b"\n"
    batch = parse(body)
    check_shape(batch)
    (s,) = batch.series
    assert s.measurement == "cpu"
    assert dict(s.tags)["hostname"] == "host_0" and len(s.tags) == 10
    assert s.timestamps.tolist() == [T0, T0 + 1, T0 + 2]
    assert s.line_numbers.tolist() == [1, 2, 3]
    assert len(s.columns) == 10
    col = s.columns["usage_guest_nice"]
    assert col.type == FieldType.FLOAT and col.mask is None
    assert col.values.tolist() == [44.01, 44.01, 44.01]
    assert batch.errors == ()


def test_every_field_type() -> None:
    batch = parse(b'm f=1.5,i=-3i,u=18446744073709551615u,b=T,s="a \\"q\\" \\\\ \\n" 7')
    check_shape(batch)
    (row,) = rows(batch)
    assert row[3] == {"f": (FieldType.FLOAT, 1.5), "i": (FieldType.INTEGER, -3),
                      "u": (FieldType.UNSIGNED, 2**64 - 1), "b": (FieldType.BOOLEAN, True),
                      "s": (FieldType.STRING, 'a "q" \\ \\n')}
    cols = batch.series[0].columns
    assert cols["u"].values.dtype == np.uint64 and cols["s"].values.dtype == object


def test_fields_missing_in_some_rows_are_masked() -> None:
    batch = parse(b"m,h=a x=1,y=2i 1\nm,h=a x=3 2\nm,h=a y=4i 3\n")
    (s,) = batch.series
    assert s.columns["x"].mask.tolist() == [True, True, False]
    assert s.columns["y"].mask.tolist() == [True, False, True]
    assert s.columns["x"].valid().tolist() == [1.0, 3.0]
    assert s.columns["y"].valid().tolist() == [2, 4]


def test_series_are_split_by_tag_set_and_keep_input_order() -> None:
    body = b"m,h=b v=1 1\nm,h=a v=2 2\nm,h=b v=3 3\nn v=4 4\nm,h=a v=5 5\n"
    batch = parse(body)
    check_shape(batch)
    got = {(s.measurement, s.tags): (s.line_numbers.tolist(), s.columns["v"].values.tolist())
           for s in batch.series}
    assert got == {("m", (("h", "b"),)): ([1, 3], [1.0, 3.0]),
                   ("m", (("h", "a"),)): ([2, 5], [2.0, 5.0]),
                   ("n", ()): ([4], [4.0])}
    assert [s.measurement for s in batch.series] == ["m", "m", "n"]


def test_tags_are_sorted_and_unescaped() -> None:
    (s,) = parse(b"m\\ x,z=1,a\\,b=v\\ w v=1").series
    assert s.measurement == "m x"
    assert s.tags == (("a,b", "v w"), ("z", "1"))


def test_comments_and_blank_lines_are_skipped_and_counted() -> None:
    batch = parse(b"# header\n\n   \n\tm v=1 1\n# m v=2\nm v=3 3\n\x00\t \n")
    assert [(r[0], r[4]) for r in rows(batch)] == [(4, 1), (6, 3)]
    assert batch.errors == ()


@pytest.mark.parametrize("body", [b"\r", b"\x0b", b"\n\r\n"])
def test_other_control_characters_are_not_blank(body: bytes) -> None:
    (err,) = parse(body).errors
    assert err.error_message.endswith("missing fields")


# ----------------------------------------------------------------------------- errors


def test_bad_lines_are_errors_and_good_lines_survive() -> None:
    body = b"m v=1 1\nm v=tru 2\nm\nm v=3 3\nm v=NaN 4\nm v=Inf\n"
    batch = parse(body)
    assert [r[0] for r in rows(batch)] == [1, 4]
    assert errors(batch) == [
        (2, "m v=tru 2", "unable to parse 'm v=tru 2': invalid boolean"),
        (3, "m", "unable to parse 'm': missing fields"),
        (5, "m v=NaN 4", "unable to parse 'm v=NaN 4': invalid number"),
        (6, "m v=Inf", "unable to parse 'm v=Inf': invalid boolean"),
    ]


def test_error_keeps_original_line_but_message_strips_leading_space() -> None:
    (err,) = parse(b"  m v=\n").errors
    assert err.original_line == "  m v="
    assert err.error_message == "unable to parse 'm v=': missing field value"


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    batch = parse(b'm,t=\xff v="\xfe" 1\nm\xff v=\n')
    (s,) = batch.series
    assert s.tags == (("t", "\ufffd"),) and s.columns["v"].values[0] == "\ufffd"
    assert batch.errors[0].original_line == "m\ufffd v="


def test_duplicate_field_last_wins_duplicate_tag_is_error() -> None:
    batch = parse(b'm a=1i,a="x",b=2 1\nm,t=1,t=2 v=1 2\n')
    assert rows(batch)[0][3] == {"a": (FieldType.STRING, "x"), "b": (FieldType.FLOAT, 2.0)}
    assert errors(batch) == [(2, "m,t=1,t=2 v=1 2",
                              "unable to parse 'm,t=1,t=2 v=1 2': duplicate tags")]


def test_number_limits() -> None:
    body = (b"m a=9223372036854775807i\nm b=-9223372036854775808i\nm c=9223372036854775808i\n"
            b"m d=18446744073709551616u\nm e=-1u\nm f=1e308\nm g=1e309\n")
    batch = parse(body)
    assert [r[0] for r in rows(batch)] == [1, 2, 6]
    assert [e.line_number for e in batch.errors] == [3, 4, 5, 7]
    assert batch.errors[3].error_message.endswith("invalid float")


def test_max_key_length() -> None:
    long_tag = "v" * 65_500
    body = (f"m,t={long_tag} ok=1 1\nm,t={long_tag} {'f' * 40}=1 2\n"
            f"m,t={'v' * 65_600} x=1 3\n").encode()
    got = parse(body)
    assert [r[0] for r in rows(got)] == [1]
    assert [e.error_message.split("': ", 1)[1] for e in got.errors] == [
        "max key length exceeded: 65548 > 65535", "max key length exceeded: 65604 > 65535"]
    assert errors(got) == errors(_exact(body))


# ------------------------------------------------------------------- time and precision


def test_precision_multiplies_and_default_time_is_used_verbatim() -> None:
    body = b"m v=1 3\nm v=2\n"
    for name, mult in PRECISIONS.items():
        got = [r[4] for r in rows(parse(body, precision=name, default_time=123))]
        assert got == [3 * mult, 123], name


def test_default_time_none_is_now_truncated_to_precision() -> None:
    before = time.time_ns()
    (t,) = [r[4] for r in rows(parse(b"m v=1", precision="s"))]
    after = time.time_ns()
    assert t % 1_000_000_000 == 0
    assert before - 1_000_000_000 < t <= after


def test_unknown_precision_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError) as exc:
        parse(b"m v=1", precision="d")
    assert exc.value.http_status == 400
    with pytest.raises(ProtocolError):
        LineProtocolParser(precision="nanoseconds")


def test_time_range_and_precision_overflow() -> None:
    body = (b"m v=1 9223372036854775806\nm v=1 -9223372036854775807\n"
            b"m v=1 9223372036854775808\n")
    batch = parse(body)
    assert [r[4] for r in rows(batch)] == [2**63 - 2]
    assert [e.error_message for e in batch.errors] == [
        "unable to parse 'm v=1 -9223372036854775807': time outside range "
        "-9223372036854775806 - 9223372036854775806",
        "unable to parse 'm v=1 9223372036854775808': strconv.ParseInt: parsing "
        '"9223372036854775808": value out of range']
    batch = parse(b"m v=1 9223372036\nm v=1 9223372037\nm v=1 -9223372036\n", precision="s")
    assert [r[4] for r in rows(batch)] == [9223372036 * 10**9, -9223372036 * 10**9]
    assert [e.line_number for e in batch.errors] == [2]


# ----------------------------------------------------------------------- type conflicts


def test_type_conflict_first_type_seen_wins_per_measurement() -> None:
    body = b"m,h=a x=1 1\nm,h=b x=2i 2\nn x=3i 3\nm,h=a x=4 4\n"
    batch = parse(body)
    assert [r[0] for r in rows(batch)] == [1, 3, 4]
    assert errors(batch) == [(2, "m,h=b x=2i 2", 'field type conflict: input field "x" on '
                              'measurement "m" is type integer, already exists as type float')]


def test_rejected_line_does_not_register_its_types() -> None:
    body = b'm a=1i\nm a=1.5,b="s"\nm b=2i\n'
    batch = parse(body, default_time=0)
    assert [r[0] for r in rows(batch)] == [1, 3]
    assert [e.line_number for e in batch.errors] == [2]


def test_conflicts_carry_across_feeds_of_one_parser() -> None:
    p = LineProtocolParser(default_time=0)
    assert p.feed(b"m x=1\n").point_count == 1
    batch = p.feed(b"m x=2i\nm x=3\n")
    assert [r[0] for r in rows(batch)] == [3]
    assert [e.line_number for e in batch.errors] == [2]


# -------------------------------------------------------------------- logical lines


def test_newline_inside_string_continues_the_line() -> None:
    body = b'm s="a\nb",v=1 1\nm v=2 2\n'
    batch = parse(body)
    assert [(r[0], r[3]) for r in rows(batch)] == [
        (1, {"s": (FieldType.STRING, "a\nb"), "v": (FieldType.FLOAT, 1.0)}),
        (3, {"v": (FieldType.FLOAT, 2.0)})]


def test_crlf_is_rejected_like_influxdb_1x() -> None:
    batch = parse(b"m v=1 1\r\nm v=2\r\n")
    assert [e.error_message for e in batch.errors] == [
        "unable to parse 'm v=1 1\r': bad timestamp", "unable to parse 'm v=2\r': invalid number"]


# ------------------------------------------------------------------------ incremental


BODIES = [
    TSBS + b"\n" + TSBS.replace(b"host_0", b"host_1") + b"\n",
    b'm s="x\ny\n",v=1 1\n# c\nm v=2i\n\nm,t=a\\ b v=3 3\nbad\nm v=4',
    b'a v=1\\\nb v=2\n' + b"c v=3 1\\\n",
    b"m x=1\nm x=2i\nm x=3\r\n  \tm y=t 5\n",
]


@pytest.mark.parametrize("body", BODIES)
def test_feeding_byte_by_byte_equals_parse(body: bytes) -> None:
    whole = parse(body, default_time=9)
    p = LineProtocolParser(default_time=9)
    batches = [p.feed(body[i:i + 1]) for i in range(len(body))] + [p.finish()]
    got_rows = sorted(r for b in batches for r in rows(b))
    got_errors = sorted(e for b in batches for e in errors(b))
    assert got_rows == rows(whole)
    assert got_errors == errors(whole)


def test_large_body_in_random_chunks_equals_parse() -> None:
    """Chunks take both paths (small ones the exact parser), the whole body the fast path."""
    rnd = np.random.default_rng(3)
    lines_ = []
    for i in range(300):
        kind = i % 6
        if kind == 0:
            lines_.append(f"cpu,host=h{i % 7},dc=a\\ b u={i}.5,s={i}i {T0 + i}")
        elif kind == 1:
            lines_.append(f'log,host=h{i % 7} msg="line {i}\nwith, \\"quotes\\"",n={i}i')
        elif kind == 2:
            lines_.append(f"cpu,host=h{i % 7},dc=a\\ b u={i}i {T0 + i}")  # type conflict
        elif kind == 3:
            lines_.append("# comment" if i % 4 else "")
        elif kind == 4:
            lines_.append(f"bad,host=h{i} v=")
        else:
            lines_.append(f"mem,host=h{i % 3} used={i}u,ok={'tf'[i % 2]} {T0 - i}")
    body = ("\n".join(lines_) + "\n").encode()
    whole = parse(body, default_time=4)
    assert len(body) > 4 * lp.SMALL_BODY and whole.point_count == 150 and len(whole.errors) == 100
    p = LineProtocolParser(default_time=4)
    batches, pos = [], 0
    while pos < len(body):
        size = int(rnd.integers(1, 6000))
        batches.append(p.feed(body[pos:pos + size]))
        pos += size
    batches.append(p.finish())
    assert sorted(r for b in batches for r in rows(b)) == rows(whole)
    assert sorted(e for b in batches for e in errors(b)) == errors(whole)


def test_feed_and_parse_take_any_bytes_like() -> None:
    p = LineProtocolParser(default_time=0)
    assert p.feed(memoryview(b"m v=1\nm v=")).point_count == 1
    assert p.feed(bytearray(b"2\n")).point_count == 1
    assert parse(memoryview(b"m v=1")).point_count == parse(bytearray(b"m v=1")).point_count == 1


def test_feed_returns_only_complete_lines() -> None:
    p = LineProtocolParser(default_time=0)
    assert p.feed(b"m v=1 1\nm v=").point_count == 1
    assert p.feed(b'2 2\nm s="a\n').point_count == 1
    assert p.feed(b'b" 3\n').point_count == 1
    last = p.finish()
    assert last.point_count == 0 and last.errors == ()
    with pytest.raises(ProtocolError):
        p.feed(b"m v=1\n")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_chunking_equals_parse(data) -> None:
    body = data.draw(bodies())
    cuts = sorted(data.draw(st.lists(st.integers(0, len(body)), max_size=6)))
    whole = parse(body, default_time=5)
    p = LineProtocolParser(default_time=5)
    batches = [p.feed(body[a:b]) for a, b in zip([0, *cuts], [*cuts, len(body)])]
    batches.append(p.finish())
    assert sorted(r for b in batches for r in rows(b)) == rows(whole)
    assert sorted(e for b in batches for e in errors(b)) == errors(whole)


# ------------------------------------------------------------- fast path vs exact parser

_NAMES = st.sampled_from(["m", "cpu", "a b", "x,y", "k=v", "é", "\t", "#c", "q\"", "\\", ""])
_ALPHA = 'ab,= \\"\t#-.09eEiutfTF\x00\r\x01é'


def _escape(text: str, specials: str) -> str:
    return "".join("\\" + c if c in specials else c for c in text)


@st.composite
def field_values(draw) -> str:
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return repr(draw(st.floats(allow_nan=False, allow_infinity=False, width=64)))
    if kind == 1:
        return f"{draw(st.integers(-(2**63), 2**63 - 1))}i"
    if kind == 2:
        return f"{draw(st.integers(0, 2**64 - 1))}u"
    if kind == 3:
        return draw(st.sampled_from(["t", "T", "true", "True", "TRUE", "f", "false", "FALSE"]))
    if kind == 4:
        s = draw(st.text(alphabet='ab ,="\\\n\t', max_size=6))
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if kind == 5:
        return draw(st.sampled_from([
            "1.", ".5", "-0", "1e5", "1E-3", "007", "12", "0.1", "+1", "inf", "-Inf", "nan",
            "Infinity", "+1i", "1_0", "0x10", "1e", "1.1.1", "--1", "1e+5", "-0i", "+5u",
            "9223372036854775808i", "18446744073709551616u", "1e400", "1i1i", "-i", "tru"]))
    return draw(st.text(alphabet=_ALPHA, max_size=5))


@st.composite
def lines(draw) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(alphabet=_ALPHA, max_size=25))
    name = draw(st.sampled_from(["cpu", "mem", "m"]))
    if draw(st.booleans()):
        name = _escape(draw(_NAMES), ", ")
    tags = draw(st.lists(st.tuples(st.sampled_from(["host", "dc", "b", "a"]),
                                   st.sampled_from(["h1", "h2", "x y", "a=b", "v"])),
                         max_size=3))
    key = name + "".join(f",{k}={_escape(v, ', =')}" for k, v in tags)
    fields = draw(st.lists(st.tuples(st.sampled_from(["v", "x", "y", "f k"]), field_values()),
                           min_size=0, max_size=4))
    section = ",".join(f"{_escape(k, ', =')}={v}" for k, v in fields)
    line = f"{key} {section}"
    ts = draw(st.one_of(st.none(), st.integers(-(2**63), 2**63), st.just("1a")))
    if ts is not None:
        line += f" {ts}"
    return line + draw(st.sampled_from(["", "", "", " ", "\r"]))


@st.composite
def bodies(draw) -> bytes:
    text = "\n".join(draw(st.lists(lines(), max_size=12)))
    if draw(st.booleans()):
        text += "\n"
    return text.encode()


def _exact(body: bytes, precision: str = "ns"):
    return lp._parse_body(body, PRECISIONS[precision], 77, 1, {}, fast_path=False)


def _fast(body: bytes, precision: str = "ns"):
    """The vectorised path even for small bodies (parse() sends those to the exact parser)."""
    return lp._parse_body(body, PRECISIONS[precision], 77, 1, {}, fast_path=True)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies(), st.sampled_from(["ns", "ms", "s"]))
def test_fast_path_equals_exact_parser(body: bytes, precision: str) -> None:
    got = _fast(body, precision)
    check_shape(got)
    check_shape(parse(body, precision=precision, default_time=77))
    want = _exact(body, precision)
    assert rows(got) == rows(want)
    assert errors(got) == errors(want)


TRICKY_VALUES = [
    "1.", ".5", "-.5", "-0", "1e5", "1E-3", "1.e5", "007", "0.1", "+1", "inf", "-Inf", "nan",
    "NaN", "Infinity", "+1i", "1_0", "0x10", "1e", "1e+", "1.1.1", "--1", "1e+5", "-e5", "e5",
    "1-", "-", ".", "-.", "-0i", "+5u", "-5u", "0u", "9223372036854775807i",
    "9223372036854775808i", "-9223372036854775809i", "18446744073709551616u", "1e400",
    "1e-400", "1i1i", "-i", "i", "u", "tru", "t", "F", "FALSE", "fAlse", '""', '"a"b"', "1\t",
]


@pytest.mark.parametrize("value", TRICKY_VALUES)
def test_tricky_values_fast_path_equals_exact_parser(value: str) -> None:
    """Each value alone in a column, and in a column of valid floats, integers and strings."""
    for other in ("2.5", "7i", '"s"', "T"):
        body = f"m,h=a v={other} 1\nm,h=a v={value} 2\nm,h=b v={value}\n".encode()
        got, want = _fast(body), _exact(body)
        assert rows(got) == rows(want) and errors(got) == errors(want), body


TRICKY_SECTIONS = [
    "a=1,b", "a=1,,b=2", "a=1,", ",a=1", "=1", "a==1", "a=1=2", "\tv=1", "\x00v=1", "v\t=1",
    'v="a=b"', 'v="a,b"', 'v="a,b=1"', 'v="x",w="a,b="', '"k"=1', 'k"=1', 'v="', 'v=""',
    'v="a"b', "a=1,a=2", "a=1i,a=2", "é=1,ü=t", "a=1,b=2,c=3,d=4",
]


@pytest.mark.parametrize("section", TRICKY_SECTIONS)
def test_tricky_field_sections_fast_path_equals_exact_parser(section: str) -> None:
    body = f"m,h=a a=1 1\nm,h=a {section} 2\nm,h=b {section}\nm,h=a a=3 3\n".encode()
    got, want = _fast(body), _exact(body)
    assert rows(got) == rows(want) and errors(got) == errors(want), body


def test_fast_path_equals_exact_parser_on_many_series() -> None:
    lines_ = []
    for i in range(400):
        h = i % 37
        f = "x=1.5,y=2i" if h % 3 else f'x={i}.25,y={i}i,z="s{i % 5}",b={"tf"[i % 2]}'
        if i % 50 == 7:
            f = "x=oops"
        lines_.append(f"m{h % 4},host=h{h},dc=d{h % 3} {f} {T0 + i}")
    body = "\n".join(lines_).encode()
    got, want = _fast(body), _exact(body)
    assert rows(got) == rows(want) and errors(got) == errors(want)
    assert len(got.series) == 37 and len(got.errors) == 8


ESCAPED = [
    rb'disk,path=C:\\Program\ Files,dev=sd\,a free=1i,msg="a b, c=d" 1',
    rb'disk,path=C:\\Program\ Files,dev=sd\,a free=2i,msg="x y 12"',
    rb'svc\ name,k\=x=v\ w up=t,note="done in 3 s" 3',
    rb'svc\ name,k\=x=v\ w up=f,note="" 4',
]


def test_ordinary_lines_never_reach_the_exact_parser(monkeypatch) -> None:
    def boom(*_args):
        raise AssertionError("exact parser used")

    monkeypatch.setattr(_lp_exact, "parse_point", boom)
    monkeypatch.setattr(_lp_exact, "scan_line_jumping", boom)
    body = b"\n".join([TSBS] * 50 + [b'st,h=1 s="ok",c=1i,u=2u,b=true,f=-1.5e3 5'] * 5) + b"\n"
    batch = parse(body)
    assert batch.point_count == 55 and batch.value_count == 525
    # escaped key parts and strings with spaces stay on the fast path too
    body = b"\n".join([rb'st,h=a\ b s="a b, c",n=1i 5', rb's\,t,h=a\=b s="x",n=2i'] * 20)
    batch = _fast(body)
    assert batch.point_count == 40 and batch.errors == ()
    assert {(s.measurement, s.tags) for s in batch.series} == {
        ("st", (("h", "a b"),)), ("s,t", (("h", "a=b"),))}
    assert batch.series[0].columns["s"].values[0] == "a b, c"
    body = b"\n".join([rb'log,h=a msg="said \"hi\", C:\\tmp\x",n=1i 7'] * 20)
    (s,) = _fast(body).series
    assert s.columns["msg"].values[0] == 'said "hi", C:\\tmp\\x'


@pytest.mark.parametrize("extra", [b"", b"\xf8", bytes(range(0xF8, 0x100))])
def test_escapes_and_spaced_strings_fast_path_equals_exact(extra: bytes) -> None:
    """Placeholder bytes for escaped spaces must not collide with bytes in the body."""
    lines_ = ESCAPED + [b'm,t=a\xf8b s="\xf8 q"', rb'm,t=a\\ b v=1', rb'm,t=a\\\ b v=1',
                        rb'm s="C:\\dir\" x",v=1 5', rb'm,t=x\ v=1 6', rb'm v\ x=1',
                        b'm s="a  b"', b'm s="a b" ', b'm s="a b"  ', b'm s="1 2" 3 4',
                        rb'm s="a\"b,c",v=1', b'm s="x,y",t="p,q" 5', b'm a="1,2",b=3 4',
                        b'm a="1,2,",b="",c=",",d=t', rb'm a="x\",b=1,c="y",d=2',
                        rb'm v="g\"h"', b"m v=", b"m v=,w=1", b'm v="",w=2']
    body = b"\n".join(lines_) + b"\n# " + extra + b'\nm s="' + extra + b'"\n'
    got, want = _fast(body), _exact(body)
    assert rows(got) == rows(want) and errors(got) == errors(want)
    assert len(rows(got)) >= 8


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(list(b'a =,"\\\n')), max_size=40).map(bytes),
       st.sampled_from([b"", b"\\", b"\\\n", b"\\\\", b'"', b"\n"]))
def test_jumping_line_scanner_equals_byte_by_byte(body: bytes, tail: bytes) -> None:
    body += tail
    for start in range(len(body) + 1):
        assert _lp_exact.scan_line_jumping(body, start) == _lp_exact.scan_line(body, start)


POOL_KEYS = ["cpu,host=a", "cpu,host=b", r"cpu,host=a\ b", 'cpu,host="q"', r"m\,x,t=1", "mem",
             "cpu,b=1,a=2", "cpu,a=2,b=1", r"c\=d,e=f\=g", r"n,t=a\\b", "é,ü=ö"]
POOL_FIELDS = ["v", "x", r"y\ z", "u", "s", r"a\,b", "t"]
POOL_VALUES = ["1", "1.5", "-2e3", "3i", "-4i", "5u", "t", "FALSE", '"s"', '"a b"', '"c,d"',
               '"e=f"', r'"g\"h"', r'"i\\j"', r'"k\l"', '""', "1e400", "+1", "nan", "x", "",
               '"', "1i1", "0x1", '"m\nn"']
POOL_TIMES = ["", " 1", " -1", " 1451606400000000000", " 9223372036854775807", " 1a", " ",
              "  2", "\t3", " 4 "]


def test_pooled_random_bodies_fast_path_equals_exact() -> None:
    """Bodies drawn from pools of keys, field keys, values and times that share series and
    layouts (the hypothesis bodies rarely do); every mismatch or crash is a fast-path bug."""
    rnd = np.random.default_rng(11)

    def pick(pool):
        return pool[int(rnd.integers(len(pool)))]

    for _ in range(100):
        lines_ = []
        for _ in range(int(rnd.integers(1, 50))):
            if rnd.random() < 0.05:
                lines_.append(pick(["", "#c", "  ", "\t#x", "bad", "m v=1\r"]))
                continue
            fields = ",".join(f"{pick(POOL_FIELDS)}={pick(POOL_VALUES)}"
                              for _ in range(int(rnd.integers(1, 5))))
            lines_.append(f"{pick(POOL_KEYS)} {fields}{pick(POOL_TIMES)}")
        body = "\n".join(lines_).encode()
        precision = pick(["ns", "s", "h"])
        got, want = _fast(body, precision), _exact(body, precision)
        check_shape(got)
        assert rows(got) == rows(want) and errors(got) == errors(want), body


FUZZ_FINDINGS = [
    # an empty value last in a column that also holds a placeholder (once an IndexError)
    [rb'cpu,host="q" u="g\"h" ', rb'c\=d,e=f\=g x="e=f",s=",y\ z="e=f" 1451606400000000000',
     rb'mem u="",a\,b=",s=-4i 9223372036854775807', rb"cpu,host=a u= "],
]


@pytest.mark.parametrize("found", FUZZ_FINDINGS)
def test_fuzz_findings_fast_path_equals_exact(found: list[bytes]) -> None:
    body = b"\n".join(found)
    for precision in ("ns", "s"):
        got, want = _fast(body, precision), _exact(body, precision)
        assert rows(got) == rows(want) and errors(got) == errors(want)


def test_a_fast_path_failure_falls_back_to_the_exact_parser(monkeypatch) -> None:
    def broken(*_args):
        raise IndexError("bug")

    body = b"\n".join([TSBS] * 20)
    want = parse(body, default_time=1)
    monkeypatch.setattr(lp.fast, "parse_fast", broken)
    got = parse(body, default_time=1)
    assert rows(got) == rows(want) and got.point_count == 20
    with pytest.raises(IndexError):
        _fast(body)


def test_small_and_large_bodies_take_both_paths_with_one_result() -> None:
    small = b"m,h=a v=1 1\nm,h=b v=2i 2\n"
    assert len(small) < lp.SMALL_BODY
    assert rows(parse(small, default_time=77)) == rows(_fast(small)) == rows(_exact(small))
    large = small * (lp.SMALL_BODY // len(small) + 1)
    assert rows(parse(large, default_time=77)) == rows(_exact(large))


def test_value_count_and_point_count() -> None:
    batch = parse(b"m a=1,b=2 1\nm a=1 2\n")
    assert batch.point_count == 2 and batch.value_count == 3
