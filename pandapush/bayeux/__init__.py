"""Bayeux protocol primitives: channel grammar, messages, errors, deliveries, the JSON codec.

Knows nothing of HTTP, and imports nothing else of pandapush (but ``pandapush._deferred``):
the interfaces, the router and the engines are built on it, never the other way.
"""
