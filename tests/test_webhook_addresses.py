"""Where webhooks may go: the address policy, URLs, and the poster checking addresses as it connects."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred, TimeoutError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from pandapush.webhooks.addresses import AddressPolicy, checkURL, parseNetworks
from pandapush.webhooks.http import AddressRefusedError, WebhookPoster
from tests.support.receiver import WebhookReceiver


class PolicyTests(SynchronousTestCase):
    def test_kinds(self) -> None:
        """Global unicast passes; everything only root may reach says what it is."""
        policy = AddressPolicy()
        for address in ("93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "8.8.8.8"):
            self.assertIsNone(policy.refusal(address, False), address)
        for address, kind in [
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.0.1", "private"),
            ("fd12:3456::1", "private"),
            ("169.254.1.1", "link-local"),
            ("fe80::1", "link-local"),
            ("169.254.169.254", "the cloud metadata service"),
            ("fd00:ec2::254", "the cloud metadata service"),
            ("100.64.0.1", "shared (CGNAT)"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("240.0.0.1", "reserved"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:127.0.0.1", "loopback"),
            ("2002:7f00:1::", "loopback"),  # 6to4 carrying 127.0.0.1
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo carrying 127.0.0.1
        ]:
            refusal = policy.refusal(address, False)
            self.assertEqual(refusal, f"{address} is {kind}: only a root admin's webhooks may reach it")
            self.assertIsNone(policy.refusal(address, True), address)
        self.assertIsNone(policy.refusal("::ffff:93.184.216.34", False))

    def test_allowedNetworks(self) -> None:
        """The operator's networks are open to every admin; nothing else is."""
        policy = AddressPolicy(parseNetworks("10.0.0.0/8, fd00::/8"))
        self.assertIsNone(policy.refusal("10.9.9.9", False))
        self.assertIsNone(policy.refusal("fd00::5", False))
        self.assertIsNotNone(policy.refusal("192.168.1.1", False))
        with self.assertRaises(ValueError):
            parseNetworks("10.0.0.0/8,nonsense")

    def test_urls(self) -> None:
        """http(s) with a host, no credentials; ports default by scheme."""
        self.assertEqual(checkURL("https://example.com/x").port, 443)
        self.assertEqual(checkURL("http://example.com:8080/x").port, 8080)
        self.assertEqual(checkURL("http://[::1]/x").host, "::1")
        for url, words in [
            ("ftp://example.com/", "http:// or https://"),
            ("example.com/hook", "http:// or https://"),
            ("https://", "no host"),
            ("https://a:b@example.com/", "user name or password"),
            ("https://example.com:99999/", "cannot be read"),
            ("https://example.com/a b", "spaces"),
            ("https://example.com/" + "x" * 2000, "longer than"),
            (None, "required"),
        ]:
            with self.assertRaises(ValueError) as caught:
                checkURL(url)
            self.assertIn(words, str(caught.exception))


class PosterTests(TestCase):
    """The poster against a real receiver, with a resolver the test controls."""

    async def setUp(self) -> None:  # type: ignore[override]
        self.receiver = await WebhookReceiver.start()
        self.addCleanup(self.receiver.stop)
        self.names: dict[str, list[str]] = {}

    def resolve(self, host: str, port: int) -> Deferred[list[str]]:
        return defer.succeed(self.names.get(host, []))

    def poster(self, timeout: float = 5.0) -> WebhookPoster:
        poster = WebhookPoster(reactor, AddressPolicy(), self.resolve, timeout)
        self.addCleanup(poster.close)
        return poster

    def url(self, host: str) -> str:
        return f"http://{host}:{self.receiver.portNumber}/hook"

    async def test_rebindingRefused(self) -> None:
        """
        A public-looking name resolving to a loopback address (or to a public and a private one)
        is refused at connect time, unless the endpoint is root's: then it connects to the
        checked address with the name in the Host header.
        """
        poster = self.poster()
        self.names["hooks.example.com"] = ["127.0.0.1"]
        self.names["both.example.com"] = ["93.184.216.34", "127.0.0.1"]
        for host in ("hooks.example.com", "both.example.com"):
            with self.assertRaises(AddressRefusedError) as caught:
                await poster.post(self.url(host), b"{}", {}, allowPrivate=False)
            self.assertIn("127.0.0.1 is loopback", str(caught.exception))
        self.assertEqual(self.receiver.attempts, [])
        status = await poster.post(
            self.url("hooks.example.com"), b'{"a":1}', {b"X-T": b"1"}, allowPrivate=True
        )
        self.assertEqual(status, 200)
        (request,) = self.receiver.received
        self.assertEqual(request.headers["host"], f"hooks.example.com:{self.receiver.portNumber}")
        self.assertEqual((request.body, request.headers["x-t"]), (b'{"a":1}', "1"))

    async def test_noRedirectsAndADeadline(self) -> None:
        """A 3xx is an answer, not followed; an endpoint that never answers fails at the deadline."""
        poster = self.poster(timeout=0.5)
        self.names["hooks.example.com"] = ["127.0.0.1"]
        self.receiver.status = 302
        self.assertEqual(await poster.post(self.url("hooks.example.com"), b"{}", {}, True), 302)
        self.receiver.hang = True
        started = reactor.seconds()
        with self.assertRaises(TimeoutError):
            await poster.post(self.url("hooks.example.com"), b"{}", {}, True)
        self.assertLess(reactor.seconds() - started, 2)
