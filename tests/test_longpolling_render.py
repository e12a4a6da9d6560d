"""What :class:`~pandapush.transports.longpolling.LongPollingTransport` reads of a head, and sets."""

from __future__ import annotations

from twisted.trial.unittest import TestCase
from twisted.web.test.requesthelper import DummyChannel

from pandapush.transports import longpolling
from pandapush.web.site import LimitedRequest


def _reference(value: bytes | None) -> str:
    """The media type as render read it before it was kept per value (header(), then split)."""
    text = value.decode("latin-1") if value else None
    return (text or "").split(";")[0].strip().lower()


class MediaTypeTests(TestCase):
    def setUp(self) -> None:
        self.patch(longpolling, "_MEDIA_TYPES", {})

    def test_asBefore(self) -> None:
        """Each ``Content-Type`` value gives the media type it gave before, the first time and when kept."""
        values = [
            b"application/json",
            b"application/json; charset=utf-8",
            b"Application/JSON",
            b" application/json ;x=y",
            b"text/plain;charset=UTF-8",
            b"application/x-www-form-urlencoded",
            b"application/jsonx",
            b";application/json",
            b"\xe9/json",
            b"",
        ]
        for value in values:
            for _ in range(2):
                self.assertEqual(longpolling._mediaType([value, b"text/plain"]), _reference(value), value)
        self.assertEqual(longpolling._mediaType(None), "")
        self.assertEqual(longpolling._mediaType([]), "")

    def test_bounded(self) -> None:
        """
        At most ``_MEDIA_TYPES_KEPT`` values are kept, none longer than ``_MEDIA_TYPE_KEPT``;
        the others are read again each time.
        """
        long = b"application/json;" + b"x" * longpolling._MEDIA_TYPE_KEPT
        self.assertEqual(longpolling._mediaType([long]), "application/json")
        self.assertNotIn(long, longpolling._MEDIA_TYPES)
        for index in range(longpolling._MEDIA_TYPES_KEPT + 10):
            value = b"text/x-%d" % index
            self.assertEqual(longpolling._mediaType([value]), value.decode())
        self.assertEqual(len(longpolling._MEDIA_TYPES), longpolling._MEDIA_TYPES_KEPT)


class PlainHeadersTests(TestCase):
    def test_asSetHeader(self) -> None:
        """
        ``setPlainHeaders`` leaves a request's answer headers as ``setHeader`` of each
        pair would: values replaced in place, new names after the others, in order.
        """
        requests = [LimitedRequest(DummyChannel()), LimitedRequest(DummyChannel())]
        for request in requests:
            request.setHeader(b"Server", b"x")
            request.setHeader(b"cache-control", b"max-age=1")
            request.responseHeaders.addRawHeader(b"Content-Type", b"text/html")
        requests[0].setPlainHeaders(longpolling._ANSWER_HEADERS)
        for name, value in longpolling._ANSWER_HEADERS:
            requests[1].setHeader(name, value)
        first, second = (list(r.responseHeaders.getAllRawHeaders()) for r in requests)
        self.assertEqual(first, second)
        self.assertEqual([name for name, _ in first][:2], [b"Server", b"Cache-Control"])
