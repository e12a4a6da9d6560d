"""Repeated failed admin logins are slowed: the throttle on a Clock, and real HTTP requests."""

from __future__ import annotations

import base64
from typing import Any

import treq
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers
from twisted.web.test.requesthelper import DummyRequest

from pandapush.auth.admin import AdminPasswordChecker
from pandapush.auth.keycache import KeyCache
from pandapush.auth.throttle import LoginThrottle, LoginThrottledError, parseTrustedProxies
from pandapush.storage.memory import MemoryStorage
from pandapush.web.admin import AdminApp
from pandapush.web.adminauth import AdminAuthority, BasicAdminAuth
from pandapush.web.adminui import AdminResource, AdminUIResource
from pandapush.web.http import ProxyTrust
from tests.support.http import stubTreq
from tests.support.inprocess import InProcessServer

IP = ["ip:10.0.0.1"]


class LoginThrottleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.throttle = LoginThrottle(self.clock, freeFailures=5, baseDelay=1.0, maxDelay=8.0, window=60.0)

    def fail(self, times: int, keys: list[str] = IP) -> None:  # type: ignore[override]
        for _ in range(times):
            self.throttle.failed(keys)

    def test_fiveFailuresAreFree(self) -> None:
        """Four failures block nothing; the fifth blocks the next attempt for one second."""
        self.fail(4)
        self.assertEqual(self.throttle.retryAfter(IP), 0)
        self.fail(1)
        self.assertEqual(self.throttle.retryAfter(IP), 1.0)
        self.assertRaises(LoginThrottledError, self.throttle.check, IP)
        self.clock.advance(1.0)
        self.throttle.check(IP)

    def test_backOffDoublesUpToTheCap(self) -> None:
        """Each failure past the free ones doubles the delay, capped at ``maxDelay``."""
        delays = []
        for _ in range(7):
            self.fail(1)
            delays.append(self.throttle.retryAfter(IP))
        self.assertEqual(delays, [0, 0, 0, 0, 1.0, 2.0, 4.0])
        self.fail(3)
        self.assertEqual(self.throttle.retryAfter(IP), 8.0)

    def test_successResets(self) -> None:
        """A successful login forgets the failures of its keys."""
        self.fail(5)
        self.throttle.succeeded(IP)
        self.assertEqual(self.throttle.retryAfter(IP), 0)
        self.fail(4)
        self.assertEqual(self.throttle.retryAfter(IP), 0)

    def test_windowForgets(self) -> None:
        """Failures are forgotten ``window`` seconds after the last one (and the entry dropped)."""
        self.fail(4)
        self.clock.advance(61)
        self.fail(1)
        self.assertEqual(self.throttle.retryAfter(IP), 0)
        self.clock.advance(61)
        self.assertEqual(self.throttle.retryAfter(IP), 0)
        self.assertEqual(len(self.throttle), 0)

    def test_anyBlockedKeyBlocks(self) -> None:
        """An attempt is refused when its address or its user name is blocked."""
        self.fail(5, ["ip:1.1.1.1", "user:admin"])
        self.assertGreater(self.throttle.retryAfter(["ip:2.2.2.2", "user:admin"]), 0)
        self.assertGreater(self.throttle.retryAfter(["ip:1.1.1.1", "user:other"]), 0)
        self.assertEqual(self.throttle.retryAfter(["ip:2.2.2.2", "user:other"]), 0)

    def test_boundedMemory(self) -> None:
        """Past ``maxEntries`` the least recently failed keys are evicted."""
        throttle = LoginThrottle(self.clock, maxEntries=100)
        for n in range(1000):
            throttle.failed([f"ip:10.0.{n // 256}.{n % 256}"])
        self.assertEqual(len(throttle), 100)
        self.assertEqual(throttle.retryAfter(["ip:10.0.3.231"]), 0)

    def test_refusalsObserved(self) -> None:
        """Every refused attempt is reported (the metric), checks that pass are not."""
        seen: list[None] = []
        self.throttle.addRefusalObserver(lambda: seen.append(None))
        self.throttle.check(IP)
        self.fail(5)
        for _ in range(3):
            self.assertRaises(LoginThrottledError, self.throttle.check, IP)
        self.assertEqual(len(seen), 3)

    def test_retryAfterHeaderRoundsUp(self) -> None:
        self.assertEqual(LoginThrottledError(0.2).retryAfterHeader, b"1")
        self.assertEqual(LoginThrottledError(3.01).retryAfterHeader, b"4")


def _request(peer: str, forwardedFor: str | None = None) -> Any:
    request = DummyRequest([b""])
    request.client = IPv4Address("TCP", peer, 1234)
    if forwardedFor is not None:
        request.requestHeaders.setRawHeaders(b"x-forwarded-for", [forwardedFor.encode()])
    return request


class ProxyTrustTests(SynchronousTestCase):
    def test_noProxiesIgnoresTheHeader(self) -> None:
        """Without trusted proxies, X-Forwarded-For is ignored: anyone can send it."""
        self.assertEqual(ProxyTrust().clientAddress(_request("1.2.3.4", "9.9.9.9")), "1.2.3.4")

    def test_trustedProxy(self) -> None:
        """From a trusted proxy, the right-most untrusted hop is the client (left of it may be forged)."""
        trust = ProxyTrust(parseTrustedProxies("10.0.0.0/8, 192.168.1.1"))
        self.assertEqual(trust.clientAddress(_request("10.1.1.1", "6.6.6.6, 5.5.5.5")), "5.5.5.5")
        self.assertEqual(trust.clientAddress(_request("10.1.1.1", "5.5.5.5, 192.168.1.1")), "5.5.5.5")
        self.assertEqual(trust.clientAddress(_request("10.1.1.1")), "10.1.1.1")
        self.assertEqual(trust.clientAddress(_request("10.1.1.1", "garbage")), "10.1.1.1")

    def test_untrustedPeerIgnoresTheHeader(self) -> None:
        trust = ProxyTrust(parseTrustedProxies("10.0.0.0/8"))
        self.assertEqual(trust.clientAddress(_request("8.8.8.8", "5.5.5.5")), "8.8.8.8")

    def test_trustsRemembered(self) -> None:
        """
        ``trusts`` gives the same answers the second time (from its memo, which stays
        bounded), including for text that is no address; with no proxies it trusts none.
        """
        trust = ProxyTrust(parseTrustedProxies("10.0.0.0/8, ::1"))
        trust.cacheSize = 3
        asked = ["10.2.3.4", "11.2.3.4", "::1", "::2", "nonsense", "10.2.3.4", "::1"]
        answers = [True, False, True, False, False, True, True]
        self.assertEqual([trust.trusts(a) for a in asked], answers)
        self.assertEqual([trust.trusts(a) for a in asked], answers)
        self.assertLessEqual(len(trust._trusted), 3)
        self.assertFalse(ProxyTrust().trusts("10.2.3.4"))

    def test_badEntry(self) -> None:
        error = self.assertRaises(ValueError, parseTrustedProxies, "10.0.0.1, proxy.local")
        self.assertIn("proxy.local", str(error))


def _basic(user: str, password: str) -> dict[bytes, list[bytes]]:
    return {b"Authorization": [b"Basic " + base64.b64encode(f"{user}:{password}".encode())]}


class AuthorityThrottleTests(SynchronousTestCase):
    """The API and the console share one authority, so one throttle, on a Clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        storage = MemoryStorage()
        self.throttle = LoginThrottle(self.clock)
        authority = AdminAuthority(
            BasicAdminAuth([AdminPasswordChecker({"admin": "right"})]),
            {"admin"},
            throttle=self.throttle,
        )
        api = AdminApp(storage, authority, KeyCache(storage, self.clock), self.clock)
        self.treq = stubTreq(AdminResource(api.app.resource(), AdminUIResource(authority)))

    def get(self, path: str, password: str | None) -> Any:
        headers = _basic("admin", password) if password is not None else {}
        d = self.treq.get("http://localhost" + path, headers=headers)
        self.treq.flush()
        return self.successResultOf(d)

    def test_apiAndConsole(self) -> None:
        """Five wrong passwords are 401; then API and console alike are 429 until the delay passed."""
        for _ in range(5):
            self.assertEqual(self.get("/admin/api/info", "wrong").code, 401)
        response = self.get("/admin/api/info", "right")
        self.assertEqual(response.code, 429)
        self.assertEqual(response.headers.getRawHeaders("retry-after"), ["1"])
        self.assertIsNone(response.headers.getRawHeaders("www-authenticate"))
        self.assertEqual(self.get("/admin", "right").code, 429)
        self.assertEqual(self.get("/admin/ui/main.js", "right").code, 429)
        self.clock.advance(1)
        self.assertEqual(self.get("/admin/api/info", "right").code, 200)
        # The success reset the count: five more failures before the next block.
        for _ in range(5):
            self.assertEqual(self.get("/admin", "wrong").code, 401)
        self.assertEqual(self.get("/admin", "wrong").code, 429)

    def test_noCredentialsAreNoFailure(self) -> None:
        """A request without credentials (a browser's first visit) is challenged, not counted."""
        for _ in range(20):
            self.assertEqual(self.get("/admin/api/info", None).code, 401)
        self.assertEqual(len(self.throttle), 0)


class InProcessThrottleTests(TestCase):
    """Real HTTP requests to a whole server with Basic admin auth."""

    async def startServer(self, *args: str) -> str:
        server = InProcessServer(
            *args, environ={"AUTH_METHOD": "basic", "ADMIN_USERNAME": "admin", "ADMIN_PASSWORD": "sesame"}
        )
        await server.start()
        self.addCleanup(server.stop)
        return server.url

    async def get(self, url: str, password: str, forwardedFor: str | None = None, user: str = "admin") -> Any:
        headers = Headers({"X-Forwarded-For": [forwardedFor]} if forwardedFor else {})
        response = await treq.get(url, auth=(user, password), headers=headers, persistent=False)
        await response.content()
        return response

    async def test_throttledOverHTTP(self) -> None:
        """After 5 failures: 429 with Retry-After on API and console, counted in the metric."""
        url = await self.startServer()
        for _ in range(5):
            self.assertEqual((await self.get(url + "/admin/api/info", "guess")).code, 401)
        refused = await self.get(url + "/admin/api/info", "sesame")
        self.assertEqual(refused.code, 429)
        self.assertEqual(refused.headers.getRawHeaders("retry-after"), ["1"])
        self.assertEqual((await self.get(url + "/admin", "sesame")).code, 429)
        metrics = await (await treq.get(url + "/metrics", persistent=False)).text()
        self.assertIn('pandapush_limit_refusals_total{limit="admin_login"} 2.0', metrics)

    async def test_forwardedForIgnoredByDefault(self) -> None:
        """Without --trusted-proxies, a forged X-Forwarded-For does not escape the throttle."""
        url = await self.startServer()
        for n in range(5):
            await self.get(url + "/admin/api/info", "guess", forwardedFor=f"7.7.7.{n}")
        self.assertEqual((await self.get(url + "/admin/api/info", "x", forwardedFor="8.8.8.8")).code, 429)

    async def test_trustedProxy(self) -> None:
        """Behind a trusted proxy, clients are told apart by X-Forwarded-For (per user name too)."""
        url = await self.startServer("--trusted-proxies", "127.0.0.1")
        for _ in range(5):
            await self.get(url + "/admin/api/info", "guess", forwardedFor="7.7.7.7")
        self.assertEqual((await self.get(url + "/admin/api/info", "x", forwardedFor="7.7.7.7")).code, 429)
        # Another client is refused too while the user name is blocked, but not for another name;
        # the blocked client is refused whatever name it tries.
        self.assertEqual((await self.get(url + "/admin/api/info", "x", forwardedFor="8.8.8.8")).code, 429)
        info = url + "/admin/api/info"
        self.assertEqual((await self.get(info, "x", forwardedFor="8.8.8.8", user="bob")).code, 401)
        self.assertEqual((await self.get(info, "x", forwardedFor="7.7.7.7", user="bob")).code, 429)
