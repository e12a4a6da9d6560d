"""Bayeux transports: framing and connections only.

Each module turns one kind of connection into calls on the router and writes
back what it answers. None of them knows about auth, storage or tenancy.

- :mod:`~pandapush.transports.longpolling`: ``long-polling`` and
  ``cross-origin-long-polling`` (HTTP POST, JSON or form body)
- :mod:`~pandapush.transports.callbackpolling`: ``callback-polling`` (JSONP GET)
- :mod:`~pandapush.transports.websocket`: ``websocket`` (Autobahn)
- :mod:`~pandapush.transports.eventsource`: ``eventsource`` (server-sent events)
- :mod:`~pandapush.transports.resource`: the one ``/push`` resource choosing among them
"""
