"""The sans-IO multipart parser: any chunking gives the same parts."""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from litevna.http.headers import MediaTypeError, parse_media_type
from litevna.multipart import PART_DATA, PART_END, PART_HEADERS, MultipartError, MultipartParser
from litevna.multipart.writer import closing, new_boundary, part_head


def body_of(parts, boundary, preamble=b"", epilogue=b""):
    out = [preamble]
    for i, (ctype, payload) in enumerate(parts):
        out.append(part_head(boundary, ctype, first=(i == 0 and not preamble)))
        out.append(payload)
    out.append(closing(boundary) + epilogue)
    return b"".join(out)


def parse(body, boundary, cuts):
    parser = MultipartParser(boundary)
    parts, current = [], None
    start = 0
    for cut in sorted(set(cuts)) + [len(body)]:
        for kind, value in parser.feed(body[start:cut]):
            if kind == PART_HEADERS:
                current = [value, b""]
            elif kind == PART_DATA:
                current[1] += value
            elif kind == PART_END:
                parts.append((current[0]["content-type"], current[1]))
        start = cut
    parser.close()
    return parts


payloads = st.binary(max_size=600).map(lambda b: b.replace(b"\r\n--", b"\r\n-x"))


class ChunkingTests(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(parts=st.lists(st.tuples(st.sampled_from(["application/dicom", "text/plain"]),
                                    payloads), min_size=1, max_size=5),
           cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=30),
           preamble=st.sampled_from([b"", b"ignored preamble\r\n"]))
    def test_any_chunking_same_parts(self, parts, cuts, preamble):
        boundary = new_boundary()
        body = body_of(parts, boundary, preamble)
        self.assertEqual(parse(body, boundary, [c % (len(body) + 1) for c in cuts]), parts)

    def test_one_byte_at_a_time(self):
        boundary = "b"
        parts = [("application/dicom", b"--b is not a delimiter without CRLF\r\n-"),
                 ("application/dicom", b"")]
        body = body_of(parts, boundary)
        self.assertEqual(parse(body, boundary, range(len(body))), parts)

    def test_payload_with_boundary_prefix(self):
        boundary = "abc"
        parts = [("application/dicom", b"x\r\n--ab\r\n--abd")]
        self.assertEqual(parse(body_of(parts, boundary), boundary, []), parts)

    def test_transport_padding_and_epilogue(self):
        body = (b"--X  \r\nContent-Type: application/dicom\r\n\r\nDATA\r\n--X--\r\nepilogue")
        self.assertEqual(parse(body, "X", [3, 9]), [("application/dicom", b"DATA")])


class MalformedTests(SynchronousTestCase):
    def test_missing_close(self):
        parser = MultipartParser("X")
        parser.feed(b"--X\r\nContent-Type: a/b\r\n\r\npartial")
        self.assertRaises(MultipartError, parser.close)

    def test_no_boundary_at_all(self):
        parser = MultipartParser("X")
        parser.feed(b"just some bytes")
        with self.assertRaises(MultipartError) as caught:
            parser.close()
        self.assertIn("no boundary", str(caught.exception))

    def test_header_without_colon(self):
        parser = MultipartParser("X")
        self.assertRaises(MultipartError, parser.feed, b"--X\r\nbroken header\r\n\r\n")

    def test_huge_headers(self):
        parser = MultipartParser("X", max_header_bytes=100)
        self.assertRaises(MultipartError, parser.feed, b"--X\r\nA: " + b"a" * 200)

    def test_bad_boundary(self):
        self.assertRaises(MultipartError, MultipartParser, "")
        self.assertRaises(MultipartError, MultipartParser, "x" * 71)

    def test_text_after_delimiter(self):
        parser = MultipartParser("X")
        self.assertRaises(MultipartError, parser.feed, b"--Xjunk\r\n")


class MediaTypeTests(SynchronousTestCase):
    def test_quoted_and_unquoted(self):
        for value in ('multipart/related; type="application/dicom"; boundary="a b"',
                      "Multipart/Related;type=application/dicom;boundary=\"a b\"",
                      'multipart/related ; boundary="a b" ; type = "application/dicom" '):
            media, params = parse_media_type(value)
            self.assertEqual(media, "multipart/related")
            self.assertEqual(params, {"type": "application/dicom", "boundary": "a b"})

    def test_escapes(self):
        self.assertEqual(parse_media_type(r'a/b; x="q\"z"')[1], {"x": 'q"z'})

    def test_garbage(self):
        for value in ("", "nonsense", "a/b; =x", "a/b; x"):
            self.assertRaises(MediaTypeError, parse_media_type, value)
