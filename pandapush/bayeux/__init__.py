"""The Bayeux core: channel grammar, errors, the router. Knows nothing of HTTP."""
