"""Webhook settings: options win over the environment, as everywhere (:mod:`pandapush.config`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pandapush.webhooks.addresses import Network, parseNetworks

__all__ = ["WebhookConfig"]


@dataclass(frozen=True)
class WebhookConfig:
    """How webhooks are sent. Times in seconds."""

    #: Networks every admin's endpoints may reach (``--webhook-allow-networks``).
    allowNetworks: tuple[Network, ...] = ()
    #: How long an event is retried before it is given up (``--webhook-max-age``).
    maxAge: float = 24 * 3600.0
    #: One request's deadline (connecting, sending, the answer).
    timeout: float = 5.0
    #: A channel vacated (a member gone) waits this long for its return before it is told.
    debounce: float = 3.0
    #: The first retry's wait; each next one doubles it, with jitter, up to ``maxBackoff``.
    firstBackoff: float = 1.0
    maxBackoff: float = 3600.0
    #: Requests in flight from one node: to one endpoint, and in all.
    perEndpoint: int = 2
    inFlight: int = 32
    #: Events in one request at most.
    batch: int = 50
    #: How long a node holds events it claimed (longer than a request can take).
    lease: float = 30.0
    #: How often a node looks for due events when nothing woke it.
    poll: float = 0.5
    #: Recent deliveries kept per endpoint (the console's list).
    keepDeliveries: int = 50

    @classmethod
    def fromOptions(cls, options: Mapping[str, Any], env: Mapping[str, str]) -> WebhookConfig:
        """``ValueError`` names the option or variable that cannot work."""
        networks = options.get("webhook-allow-networks") or env.get("PANDAPUSH_WEBHOOK_ALLOW_NETWORKS")
        try:
            allowed = parseNetworks(networks)
        except ValueError as error:
            raise ValueError(
                f"--webhook-allow-networks (or PANDAPUSH_WEBHOOK_ALLOW_NETWORKS): {error}"
            ) from None
        maxAge = options.get("webhook-max-age")
        if maxAge is None:
            text = env.get("PANDAPUSH_WEBHOOK_MAX_AGE")
            try:
                maxAge = float(text) if text else cls.maxAge
            except ValueError:
                raise ValueError(f"PANDAPUSH_WEBHOOK_MAX_AGE must be seconds, not {text!r}") from None
        if maxAge <= 0:
            raise ValueError("--webhook-max-age (or PANDAPUSH_WEBHOOK_MAX_AGE) must be positive")
        tuning: dict[str, Any] = {}
        for name, field in (
            ("PANDAPUSH_WEBHOOK_LEASE", "lease"),
            ("PANDAPUSH_WEBHOOK_FIRST_BACKOFF", "firstBackoff"),
            ("PANDAPUSH_WEBHOOK_MAX_BACKOFF", "maxBackoff"),
        ):
            text = env.get(name)
            if text:
                try:
                    tuning[field] = float(text)
                except ValueError:
                    raise ValueError(f"{name} must be seconds, not {text!r}") from None
                if tuning[field] <= 0:
                    raise ValueError(f"{name} must be positive")
        return dataclasses.replace(cls(allowNetworks=allowed, maxAge=float(maxAge)), **tuning)
