"""Engines: where clients, subscriptions, queues and presence live; :func:`makeEngine` picks one by name.

Built in: ``memory`` serves one process; ``redis`` serves many nodes sharing Redis
(:mod:`pandapush.engines.factories`; each engine module is imported only when
chosen). Any other ``--engine``/``ENGINE`` name is looked up in the entry-point
group ``pandapush.engines``, where our packaging registers the built-in two as
well, e.g.::

    [project.entry-points."pandapush.engines"]
    myengine = "mypkg.engine:factory"

The entry point names an :class:`~pandapush.interfaces.IEngineFactory` (or a
class or function making one). The factory, and the engine it makes, are
checked with ``verifyObject`` before use, so a broken plugin fails at start with
a clear message instead of at the first client.

Both built-in engines keep what they hold in this process the same way
(:mod:`pandapush.engines.local`: subscription index, per-client queues and
their cap, the per-turn flush, statistics).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import metadata
from typing import Any

from twisted.logger import Logger
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from pandapush.engines import factories
from pandapush.engines.config import DEFAULT_REDIS_HOSTS, EngineConfig, EngineConfigError
from pandapush.interfaces import IEngine, IEngineFactory

__all__ = [
    "BUILTIN_ENGINES",
    "DEFAULT_REDIS_HOSTS",
    "ENTRY_POINT_GROUP",
    "EngineConfig",
    "EngineConfigError",
    "IEngineFactory",
    "chooseEngine",
    "findEngineFactory",
    "makeEngine",
]

_log = Logger()

ENTRY_POINT_GROUP = "pandapush.engines"

#: name -> factory of the engines that ship with pandapush (found without package metadata).
BUILTIN_ENGINES: Mapping[str, IEngineFactory] = {
    "memory": factories.memory,
    "redis": factories.redis,
}


def chooseEngine(engine: str | None, redisHosts: str | None) -> str:
    """
    The engine's name: the one chosen (``--engine``, ``ENGINE``); without a choice,
    ``redis`` when Redis hosts are given (``REDIS_HOSTS`` implies it), else ``memory``.
    """
    if engine:
        return engine
    return "redis" if redisHosts else "memory"


def _checkFactory(factory: Any, name: str, origin: str) -> IEngineFactory:
    try:
        verifyObject(IEngineFactory, factory)
    except Invalid as e:
        raise EngineConfigError(
            f"engine plugin {name!r} from {origin} does not provide IEngineFactory: {e}"
        ) from e
    return factory  # type: ignore[no-any-return]


def _available(entryPoints: Iterable[metadata.EntryPoint]) -> str:
    return ", ".join(sorted(set(BUILTIN_ENGINES) | {e.name for e in entryPoints}))


def findEngineFactory(name: str, entryPoints: Iterable[metadata.EntryPoint] | None = None) -> IEngineFactory:
    """
    The factory of the engine named ``name``: a built-in one, else the entry point of
    that name in the ``pandapush.engines`` group (``entryPoints`` replaces the group,
    for tests). Fails with :class:`EngineConfigError` naming what is available.
    """
    builtin = BUILTIN_ENGINES.get(name)
    if builtin is not None:
        return _checkFactory(builtin, name, "pandapush")
    entryPoints = list(metadata.entry_points(group=ENTRY_POINT_GROUP) if entryPoints is None else entryPoints)
    for entryPoint in entryPoints:
        if entryPoint.name != name:
            continue
        try:
            loaded = entryPoint.load()
        except Exception as e:
            raise EngineConfigError(
                f"engine plugin {name!r} ({entryPoint.value}) could not be loaded: {e!r}"
            ) from e
        # An entry point may name the factory, or a class or function making one.
        if not IEngineFactory.providedBy(loaded) and callable(loaded):
            try:
                loaded = loaded()
            except Exception as e:
                raise EngineConfigError(f"engine plugin {name!r} failed to build its factory: {e!r}") from e
        return _checkFactory(loaded, name, f"entry point {entryPoint.value}")
    raise EngineConfigError(f"unknown engine {name!r}; available: {_available(entryPoints)}")


def makeEngine(
    name: str,
    reactor: Any,
    config: EngineConfig | None = None,
    entryPoints: Iterable[metadata.EntryPoint] | None = None,
) -> IEngine:
    """
    A new engine named ``name`` for ``config``, checked to provide IEngine. Fails with
    :class:`EngineConfigError` when the name is unknown, the plugin broken, or its
    settings refused (a malformed ``REDIS_HOSTS``).
    """
    factory = findEngineFactory(name, entryPoints)
    try:
        engine = factory.makeEngine(reactor, config or EngineConfig())
    except EngineConfigError:
        raise
    except Exception as e:
        raise EngineConfigError(f"engine {name!r} could not be made: {e}") from e
    try:
        verifyObject(IEngine, engine)
    except Invalid as e:
        close = getattr(engine, "close", None)
        if callable(close):
            close()
        raise EngineConfigError(f"engine plugin {name!r} made an object that is not an IEngine: {e}") from e
    if name not in BUILTIN_ENGINES:
        _log.info("using engine plugin {name}", name=name)
    return engine
