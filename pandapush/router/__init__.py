"""The Bayeux router: what a node does with the messages its transports decode.

:class:`BayeuxRouter` (``router.py``) wires the pieces: the extension pipeline
(``pipeline.py``), the meta channels and publishing (``meta.py``), the clients'
sessions on this node (``sessions.py``) and :class:`Limits` (``limits.py``).
Everything above it depends on :class:`~pandapush.interfaces.IRouter`, not on this
package; only the wiring (``pandapush.tap``) builds one.
"""

from pandapush.router.limits import Limits
from pandapush.router.meta import BAYEUX_VERSION, CONNECTION_TYPES
from pandapush.router.router import BayeuxRouter

__all__ = ["BAYEUX_VERSION", "CONNECTION_TYPES", "BayeuxRouter", "Limits"]
