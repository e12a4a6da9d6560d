"""pandapush: a multi-tenant, real-time publish/subscribe service speaking Bayeux."""

__version__ = "0.1.0"
__all__ = ["__version__"]
