"""Engines: where clients, subscriptions, queues and presence live.

``memory`` serves one process; ``redis`` serves many nodes sharing Redis.
"""
