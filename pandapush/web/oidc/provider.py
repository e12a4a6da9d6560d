"""
The identity provider as this server sees it: its discovery document and its signing keys.

Both are fetched with treq (the reactor never waits on the network), checked, and cached:
the discovery document for ``metadataTTL``, the key set until an ID token names a key
(``kid``) it does not hold, which is how a provider announces a rotation; that refetch
happens at most once every ``refreshInterval`` seconds, so a flood of forged tokens with
made-up key ids cannot turn into a flood of requests to the provider. Callers asking while
a fetch is under way share it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import treq
from joserfc.jwk import KeySet
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from pandapush.bayeux import json
from pandapush.web.oidc.config import OIDCConfigError, checkURL

__all__ = ["ID_TOKEN_ALGORITHMS", "HTTPClient", "JSONClient", "Provider", "ProviderError"]

#: Signature algorithms accepted for ID tokens: asymmetric ones only, so that nothing the
#: client knows (its secret) can sign an ID token, and never ``none``.
ID_TOKEN_ALGORITHMS = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "EdDSA",
)
#: A discovery document or key set is a few kilobytes; refuse to buffer more than this.
MAX_RESPONSE = 1024 * 1024


class ProviderError(Exception):
    """The identity provider could not be reached, or answered something unusable."""


@dataclass(frozen=True)
class Answer:
    code: int
    body: Any  # decoded JSON, or None when the body was not JSON


class JSONClient(Protocol):
    """What :class:`Provider` and the login flow ask of HTTP: :class:`HTTPClient`, or a test's fake."""

    async def request(
        self,
        method: str,
        url: str,
        data: dict[str, str] | None = None,
        headers: dict[bytes, list[bytes]] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Answer: ...


class HTTPClient:
    """JSON over HTTP with treq: a deadline on every request, a cap on every body."""

    def __init__(self, timeout: float = 10.0, maxSize: int = MAX_RESPONSE) -> None:
        self.timeout = timeout
        self.maxSize = maxSize

    async def request(
        self,
        method: str,
        url: str,
        data: dict[str, str] | None = None,
        headers: dict[bytes, list[bytes]] | None = None,
        auth: tuple[str, str] | None = None,
    ) -> Answer:
        try:
            response: IResponse = await treq.request(
                method,
                url,
                data=data,
                headers=Headers({b"Accept": [b"application/json"], **(headers or {})}),
                auth=auth,
                timeout=self.timeout,
                persistent=False,
            )
            chunks: list[bytes] = []
            size = [0]

            def collect(chunk: bytes) -> None:
                size[0] += len(chunk)
                if size[0] > self.maxSize:
                    raise ProviderError(f"{url} answered more than {self.maxSize} bytes")
                chunks.append(chunk)

            await treq.collect(response, collect)
        except ProviderError:
            raise
        except Exception as error:
            raise ProviderError(f"{url} could not be reached: {error.__class__.__name__}: {error}") from None
        try:
            body = json.loads(b"".join(chunks)) if chunks else None
        except ValueError:
            body = None
        return Answer(response.code, body)


class Provider:
    """One issuer's discovery document and signing keys (see the module docstring)."""

    _log = Logger()

    def __init__(
        self,
        issuer: str,
        clock: IReactorTime,
        http: JSONClient | None = None,
        metadataTTL: float = 3600.0,
        refreshInterval: float = 60.0,
    ) -> None:
        self.issuer = issuer
        self.clock = clock
        self.http: JSONClient = http or HTTPClient()
        self.metadataTTL = metadataTTL
        self.refreshInterval = refreshInterval
        self._metadata: dict[str, Any] | None = None
        self._metadataAt = 0.0
        self._keys: KeySet | None = None
        self._refreshedAt: float | None = None
        self._waiting: dict[str, list[Deferred[Any]]] = {}

    def _shared(self, what: str, fetch: Callable[[], Any]) -> Deferred[Any]:
        """One fetch of ``what`` at a time; everyone who asks meanwhile gets its outcome."""
        waiting = self._waiting.get(what)
        mine: Deferred[Any] = Deferred()
        if waiting is not None:
            waiting.append(mine)
            return mine
        waiting = self._waiting[what] = [mine]

        def done(result: Any) -> None:
            del self._waiting[what]
            for waiter in waiting:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(result)

        Deferred.fromCoroutine(fetch()).addBoth(done)
        return mine

    # the discovery document

    def metadata(self) -> Deferred[dict[str, Any]]:
        """The checked discovery document (``/.well-known/openid-configuration``)."""
        now = self.clock.seconds()
        if self._metadata is not None and now - self._metadataAt < self.metadataTTL:
            return defer.succeed(self._metadata)
        return self._shared("metadata", self._fetchMetadata)

    async def _fetchMetadata(self) -> dict[str, Any]:
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        answer = await self.http.request("GET", url)
        if answer.code != 200 or not isinstance(answer.body, dict):
            raise ProviderError(f"{url} answered {answer.code} without a discovery document")
        metadata = self.checkMetadata(answer.body)
        self._metadata, self._metadataAt = metadata, self.clock.seconds()
        self._log.info("OpenID provider {issuer} discovered", issuer=metadata["issuer"])
        return metadata

    def checkMetadata(self, metadata: dict[str, Any]) -> dict[str, Any]:
        """``metadata`` if it is this issuer's and has what the login needs, else ProviderError."""
        issuer = metadata.get("issuer")
        # The document must name the issuer it was fetched for (OpenID Connect Discovery
        # 4.3), or a provider could speak for another; a trailing slash is forgiven.
        if not isinstance(issuer, str) or issuer.rstrip("/") != self.issuer.rstrip("/"):
            raise ProviderError(f"the discovery document names issuer {issuer!r}, not {self.issuer!r}")
        for name in ("authorization_endpoint", "token_endpoint", "jwks_uri"):
            value = metadata.get(name)
            if not isinstance(value, str):
                raise ProviderError(f"the discovery document has no {name}")
            try:
                checkURL(value, name)
            except OIDCConfigError as error:
                raise ProviderError(str(error)) from None
        for name in ("end_session_endpoint", "userinfo_endpoint"):
            value = metadata.get(name)
            if value is not None:
                try:
                    checkURL(str(value), name)
                except OIDCConfigError:
                    self._log.warn("ignoring the provider's {name} {value!r}", name=name, value=value)
                    metadata = {k: v for k, v in metadata.items() if k != name}
        return metadata

    def algorithms(self, metadata: dict[str, Any]) -> list[str]:
        """The ID token algorithms both sides accept."""
        offered = metadata.get("id_token_signing_alg_values_supported")
        if not isinstance(offered, list):
            return ["RS256"]  # what OpenID Connect requires every provider to support
        accepted = [alg for alg in ID_TOKEN_ALGORITHMS if alg in offered]
        if not accepted:
            raise ProviderError(f"the provider signs ID tokens only with {offered}: none is accepted here")
        return accepted

    # the signing keys

    def signingKey(self, kid: str | None) -> Deferred[Any]:
        """The provider's key named ``kid`` (or its one signing key, for a token naming none)."""
        return Deferred.fromCoroutine(self._signingKey(kid))

    async def _signingKey(self, kid: str | None) -> Any:
        keys = self._keys
        if keys is None:
            keys = await self._shared("keys", self._fetchKeys)
        found = self._find(keys, kid)
        if found is not None:
            return found
        # An unknown key: the provider may have rotated one in since we fetched, so fetch
        # again, but only once per refreshInterval whatever the tokens say.
        now = self.clock.seconds()
        if self._refreshedAt is not None and now - self._refreshedAt < self.refreshInterval:
            raise ProviderError(f"the provider has no signing key {kid!r}")
        self._refreshedAt = now
        keys = await self._shared("keys", self._fetchKeys)
        found = self._find(keys, kid)
        if found is None:
            raise ProviderError(f"the provider has no signing key {kid!r}")
        return found

    @staticmethod
    def _find(keys: KeySet, kid: str | None) -> Any:
        signing = [k for k in keys.keys if k.get("use") in (None, "sig")]
        if kid is None:
            return signing[0] if len(signing) == 1 else None
        for key in signing:
            if key.kid == kid:
                return key
        return None

    async def _fetchKeys(self) -> KeySet:
        metadata = await self.metadata()
        url = metadata["jwks_uri"]
        answer = await self.http.request("GET", url)
        if (
            answer.code != 200
            or not isinstance(answer.body, dict)
            or not isinstance(answer.body.get("keys"), list)
        ):
            raise ProviderError(f"{url} answered {answer.code} without a key set")
        usable = []
        for entry in answer.body["keys"]:
            # Public keys only (a private member would mean a confused provider; never
            # keep it), and kinds this side can verify with.
            if not isinstance(entry, dict) or entry.get("kty") not in ("RSA", "EC", "OKP"):
                continue
            if any(member in entry for member in ("d", "p", "q")):
                continue
            usable.append(entry)
        try:
            keys = KeySet.import_key_set({"keys": usable})
        except Exception as error:
            raise ProviderError(f"{url} has a key that cannot be read: {error}") from None
        self._keys = keys
        self._log.info(
            "OpenID provider keys fetched: {kids}",
            kids=[k.kid for k in keys.keys],
            host=urlsplit(url).hostname,
        )
        return keys
