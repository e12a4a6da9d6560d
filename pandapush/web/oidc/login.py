"""
The authorization code flow with PKCE, from the redirect to the provider to a checked identity.

:meth:`OIDCLogin.begin` makes a fresh ``state`` (ties the provider's answer to this
browser's request: a forged or replayed callback is refused before its code is used),
``nonce`` (ties the ID token to this request: a token from another login is refused) and
PKCE verifier (only this server, holding the verifier, can redeem the code), and the
provider's authorization URL carrying them. The three are kept in a signed cookie in the
browser, so that any node can finish the login.

:meth:`OIDCLogin.finish` checks the ``state``, redeems the code at the token endpoint
(with the verifier and the client's credentials) and checks the ID token: its signature
against the provider's published keys (asymmetric algorithms only), ``iss`` (the
discovered issuer), ``aud`` (this client; ``azp`` when there are several audiences),
``exp``/``iat`` (with a minute of leeway), ``nonce``, and ``at_hash`` when present (and
the answer's ``iss``, RFC 9207, when the provider sends one). Then the
admin's name comes from the configured claim (asking the userinfo endpoint when the ID
token leaves it out).
"""

from __future__ import annotations

import hmac
from base64 import b64encode
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from authlib.common.security import generate_token
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jws, jwt
from joserfc.errors import JoseError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from pandapush.web.oidc.claims import LoginRefusedError, adminName
from pandapush.web.oidc.config import OIDCConfig
from pandapush.web.oidc.provider import Provider, ProviderError

__all__ = ["Identity", "LoginFailedError", "OIDCLogin"]

#: Clock skew tolerated on the ID token's times.
LEEWAY = 60


class LoginFailedError(Exception):
    """
    A sign-in that cannot be completed: ``status`` for the page (400: the request was not a
    valid callback; 403: refused; 502: the provider failed), ``message`` for the person.
    """

    def __init__(self, status: int, message: str, reason: str | None = None) -> None:
        super().__init__(reason or message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Identity:
    """Who signed in: the admin ``name``, the ``idToken`` (the logout hint) and its claims."""

    name: str
    idToken: str
    claims: dict[str, Any] = field(repr=False)


def _said(body: Any) -> str:
    """The provider's ``error`` (and description) from a JSON answer, made safe to show."""
    if not isinstance(body, dict):
        return "no explanation"
    parts = [str(body.get(k)) for k in ("error", "error_description") if body.get(k)]
    text = ": ".join(parts) or "no explanation"
    return "".join(c for c in text if c.isprintable())[:300]


class OIDCLogin:
    """The flow for one client of one provider (see the module docstring)."""

    _log = Logger()

    def __init__(self, config: OIDCConfig, provider: Provider, clock: IReactorTime) -> None:
        self.config = config
        self.provider = provider
        self.clock = clock

    async def begin(self, redirectURI: str, next: str) -> tuple[str, dict[str, str]]:
        """
        The provider's authorization URL, and the values to keep for :meth:`finish`
        (``state``, ``nonce``, ``verifier``, ``next``, ``redirect``).
        """
        try:
            metadata = await self.provider.metadata()
        except ProviderError as error:
            raise LoginFailedError(
                502, "The identity provider cannot be reached just now.", str(error)
            ) from None
        state, nonce, verifier = generate_token(32), generate_token(32), generate_token(64)
        url = prepare_grant_uri(
            metadata["authorization_endpoint"],
            self.config.clientId,
            "code",
            redirect_uri=redirectURI,
            scope=" ".join(self.config.scopes),
            state=state,
            nonce=nonce,
            code_challenge=create_s256_code_challenge(verifier),
            code_challenge_method="S256",
        )
        return url, {
            "state": state,
            "nonce": nonce,
            "verifier": verifier,
            "next": next,
            "redirect": redirectURI,
        }

    async def finish(self, kept: Mapping[str, Any], query: Mapping[str, str]) -> Identity:
        """The identity the provider's callback (``query``) proves, given what :meth:`begin` kept."""
        state, expected = query.get("state") or "", str(kept.get("state") or "")
        if not expected or not hmac.compare_digest(state.encode(), expected.encode()):
            raise LoginFailedError(
                400, "This sign-in did not start here (its state does not match).", "state mismatch"
            )
        if query.get("error"):
            said = _said({"error": query.get("error"), "error_description": query.get("error_description")})
            raise LoginFailedError(403, f"The identity provider did not sign you in: {said}.")
        code = query.get("code")
        if not code:
            raise LoginFailedError(400, "The identity provider sent no authorization code.")
        try:
            metadata = await self.provider.metadata()
            # RFC 9207: a provider that names itself in its answer must name itself, or the
            # answer is another provider's, mixed up with ours.
            if "iss" in query and query["iss"] != metadata["issuer"]:
                raise LoginFailedError(400, "The sign-in answer came from another identity provider.")
            tokens = await self._redeem(metadata, code, kept)
            idToken = tokens.get("id_token")
            if not isinstance(idToken, str):
                raise LoginFailedError(502, "The identity provider sent no ID token.")
            accessToken = tokens.get("access_token")
            claims = await self._checkIDToken(metadata, idToken, str(kept.get("nonce") or ""), accessToken)
            if self.config.claim not in claims and isinstance(accessToken, str):
                claims = await self._withUserInfo(metadata, claims, accessToken)
        except ProviderError as error:
            raise LoginFailedError(
                502, "The identity provider could not complete the sign-in.", str(error)
            ) from None
        try:
            name = adminName(claims, self.config.claim, self.config.allowedDomains)
        except LoginRefusedError as refused:
            raise LoginFailedError(403, str(refused)) from None
        return Identity(name, idToken, claims)

    async def _redeem(self, metadata: dict[str, Any], code: str, kept: Mapping[str, Any]) -> dict[str, Any]:
        """The token endpoint's answer to the code, with the PKCE verifier and our credentials."""
        fields = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": str(kept.get("redirect") or ""),
            "code_verifier": str(kept.get("verifier") or ""),
        }
        headers: dict[bytes, list[bytes]] = {}
        secret = self.config.clientSecret
        methods = metadata.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
        if secret is not None and "client_secret_basic" in methods:
            # RFC 6749 2.3.1: both are form-encoded before they are joined and base64'd.
            pair = f"{quote(self.config.clientId, safe='')}:{quote(secret, safe='')}"
            headers[b"Authorization"] = [b"Basic " + b64encode(pair.encode("utf-8"))]
        else:
            fields["client_id"] = self.config.clientId
            if secret is not None:
                fields["client_secret"] = secret
        answer = await self.provider.http.request(
            "POST", metadata["token_endpoint"], data=fields, headers=headers
        )
        if answer.code != 200 or not isinstance(answer.body, dict):
            raise LoginFailedError(
                502,
                f"The identity provider refused the authorization code ({_said(answer.body)}).",
                f"token endpoint answered {answer.code}",
            )
        return answer.body

    async def _checkIDToken(
        self, metadata: dict[str, Any], idToken: str, nonce: str, accessToken: Any
    ) -> dict[str, Any]:
        algorithms = self.provider.algorithms(metadata)
        try:
            header = jws.extract_compact(idToken.encode("ascii")).protected
        except (JoseError, ValueError, UnicodeError):
            raise LoginFailedError(502, "The ID token is malformed.", "unreadable ID token") from None
        if header.get("alg") not in algorithms:
            raise LoginFailedError(
                502,
                "The ID token is signed in a way not accepted here.",
                f"ID token alg {header.get('alg')!r}",
            )
        kid = header.get("kid")
        key = await self.provider.signingKey(kid if isinstance(kid, str) else None)
        try:
            token = jwt.decode(idToken, key, algorithms=algorithms)
            claims = CodeIDToken(
                token.claims,
                token.header,
                {
                    "iss": {"essential": True, "value": metadata["issuer"]},
                    "aud": {"essential": True, "value": self.config.clientId},
                },
                {"nonce": nonce, "client_id": self.config.clientId, "access_token": accessToken},
            )
            claims.validate(now=int(self.clock.seconds()), leeway=LEEWAY)
        except JoseError as error:
            self._log.warn("ID token refused: {error}", error=str(error))
            said = (error.description or error.error.replace("_", " ")).rstrip(".")
            raise LoginFailedError(502, f"The ID token was refused: {said}.", str(error)) from None
        return dict(claims)

    async def _withUserInfo(
        self, metadata: dict[str, Any], claims: dict[str, Any], accessToken: str
    ) -> dict[str, Any]:
        """``claims`` plus the userinfo endpoint's, which must be about the same ``sub``."""
        endpoint = metadata.get("userinfo_endpoint")
        if not isinstance(endpoint, str):
            return claims
        answer = await self.provider.http.request(
            "GET", endpoint, headers={b"Authorization": [f"Bearer {accessToken}".encode("ascii", "replace")]}
        )
        if answer.code != 200 or not isinstance(answer.body, dict):
            raise ProviderError(f"the userinfo endpoint answered {answer.code}")
        if answer.body.get("sub") != claims.get("sub"):
            raise ProviderError("the userinfo endpoint answered for another subject")
        # The ID token's own claims win: they are the signed ones.
        return {**answer.body, **claims}
