"""Router features that are not the protocol itself: each an extension, a listener, or both.

They sit above :mod:`pandapush.auth` (limits and expiry read what tenancy left in
``context.attributes`` and parse tenant channels with its rules) and below
:mod:`pandapush.web`, and they know the router only as an
:class:`~pandapush.interfaces.IRouter`:

- :mod:`~pandapush.extensions.limits`: publishes per second per key, clients per application;
- :mod:`~pandapush.extensions.presence`: who else is on a presence channel;
- :mod:`~pandapush.extensions.expiry`: token-granted subscriptions end with their token;
- :mod:`~pandapush.extensions.acknowledge`: CometD's acknowledgements (batches sent again
  until a client acknowledges them);
- :mod:`~pandapush.extensions.statistics`: per-application figures and the meta channels;
- :mod:`~pandapush.extensions.metrics`: Prometheus counters and gauges (``/metrics``).

None of them adds itself to the router's extensions: ``pandapush.tap.makeService`` adds
them, from one ordered list, and says there why in that order. (Those that follow the
engine register as its listeners when they are made.)
"""
