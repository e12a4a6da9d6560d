"""Storage of applications, their admins and keys: :func:`makeStorage` picks the backend.

Built in: ``sqlite`` (the embedded default), ``postgres`` and ``memory``; each module is
imported only when chosen, so a server on SQLite never imports psycopg2. Any other
``DATABASE=<name>`` is looked up among third-party backends, which provide
:class:`~pandapush.storage.interfaces.IStorageFactory` as either

- an entry point in the group ``pandapush.storage`` named ``<name>``
  (``[project.entry-points."pandapush.storage"] mybackend = "mypkg.storage:factory"``), or
- a Twisted plugin (also providing ``IPlugin``) in a ``pandapush/storage/plugins/``
  dropin folder of its distribution.

Either way the factory, and the storage it makes, are checked with ``verifyObject``
before use, so a broken plugin fails at start with a clear message.

At server start::

    storage = makeStorage(StorageConfig.fromEnvironment())
    yield storage.start()      # SQLite migrates; PostgreSQL checks its schema version
    ...
    yield storage.close()      # at shutdown
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from importlib import metadata
from types import ModuleType
from typing import Any

from twisted.logger import Logger
from zope.interface.exceptions import Invalid
from zope.interface.verify import verifyObject

from pandapush.storage.config import StorageConfig
from pandapush.storage.errors import (
    AlreadyExistsError,
    NoSuchApplicationError,
    NoSuchKeyError,
    NotFoundError,
    SchemaOutOfDateError,
    StorageConfigError,
    StorageError,
    StorageUnavailableError,
)
from pandapush.storage.interfaces import IStorage, IStorageFactory
from pandapush.storage.models import Application, HistoryLimits, Key

__all__ = [
    "BUILTIN_BACKENDS",
    "ENTRY_POINT_GROUP",
    "AlreadyExistsError",
    "Application",
    "HistoryLimits",
    "IStorage",
    "IStorageFactory",
    "Key",
    "NoSuchApplicationError",
    "NoSuchKeyError",
    "NotFoundError",
    "SchemaOutOfDateError",
    "StorageConfig",
    "StorageConfigError",
    "StorageError",
    "StorageUnavailableError",
    "findStorageFactory",
    "makeStorage",
]

_log = Logger()

ENTRY_POINT_GROUP = "pandapush.storage"

#: name -> module with ``makeStorage(config)``; imported only when chosen.
BUILTIN_BACKENDS: Mapping[str, str] = {
    "sqlite": "pandapush.storage.sqlite",
    "postgres": "pandapush.storage.postgres",
    "memory": "pandapush.storage.memory",
}

#: Upstream accepted knex client names too.
_ALIASES = {"sqlite3": "sqlite", "postgresql": "postgres", "pg": "postgres"}


def _defaultPluginPackages() -> list[ModuleType]:
    from pandapush.storage import plugins

    return [plugins]


def _checkFactory(factory: Any, name: str, origin: str) -> IStorageFactory:
    try:
        verifyObject(IStorageFactory, factory)
    except Invalid as e:
        raise StorageConfigError(
            f"storage plugin {name!r} from {origin} does not provide IStorageFactory: {e}"
        ) from e
    return factory  # type: ignore[no-any-return]


def findStorageFactory(
    name: str,
    entryPoints: Iterable[metadata.EntryPoint] | None = None,
    pluginPackages: Iterable[ModuleType] | None = None,
) -> IStorageFactory:
    """
    The third-party factory named ``name``: entry points of the ``pandapush.storage``
    group first, then Twisted plugins. ``entryPoints``/``pluginPackages`` replace where
    to look (tests). Fails with :class:`StorageConfigError` naming what is available.
    """
    from twisted.plugin import getPlugins

    if entryPoints is None:
        entryPoints = metadata.entry_points(group=ENTRY_POINT_GROUP)
    available: list[str] = []
    for entryPoint in entryPoints:
        available.append(entryPoint.name)
        if entryPoint.name != name:
            continue
        try:
            loaded = entryPoint.load()
        except Exception as e:
            raise StorageConfigError(
                f"storage plugin {name!r} ({entryPoint.value}) could not be loaded: {e!r}"
            ) from e
        # An entry point may name the factory or a class/function making one.
        factory = loaded if IStorageFactory.providedBy(loaded) else _callFactory(loaded, name)
        return _checkFactory(factory, name, f"entry point {entryPoint.value}")
    for package in _defaultPluginPackages() if pluginPackages is None else pluginPackages:
        for plugin in getPlugins(IStorageFactory, package):
            pluginName = getattr(plugin, "name", None)
            available.append(str(pluginName))
            if pluginName == name:
                return _checkFactory(plugin, name, f"Twisted plugin in {package.__name__}")
    known = sorted(set(BUILTIN_BACKENDS) | set(available))
    raise StorageConfigError(f"unknown storage backend DATABASE={name!r}; available: {', '.join(known)}")


def _callFactory(loaded: Any, name: str) -> Any:
    if callable(loaded):
        try:
            return loaded()
        except Exception as e:
            raise StorageConfigError(f"storage plugin {name!r} failed to build its factory: {e!r}") from e
    return loaded


def makeStorage(
    config: StorageConfig | Mapping[str, Any] | None = None,
    entryPoints: Iterable[metadata.EntryPoint] | None = None,
    pluginPackages: Iterable[ModuleType] | None = None,
) -> IStorage:
    """
    A new storage, not yet started, for ``config``: a :class:`StorageConfig`, a mapping
    of upstream's environment names (``DATABASE``, ``DATABASE_PATH``, ...), or None
    for ``os.environ``. Call ``start()`` on it before use and ``close()`` at the end.
    """
    config = StorageConfig.coerce(config)
    name = _ALIASES.get(config.database, config.database)
    if name in BUILTIN_BACKENDS:
        module = importlib.import_module(BUILTIN_BACKENDS[name])
        return module.makeStorage(config)  # type: ignore[no-any-return]
    factory = findStorageFactory(name, entryPoints, pluginPackages)
    try:
        storage = factory.makeStorage(config)
    except StorageError:
        raise
    except Exception as e:
        raise StorageConfigError(f"storage plugin {name!r} failed to make a storage: {e!r}") from e
    try:
        verifyObject(IStorage, storage)
    except Invalid as e:
        raise StorageConfigError(
            f"storage plugin {name!r} made an object that is not an IStorage: {e}"
        ) from e
    _log.info("using storage plugin {name}", name=name)
    return storage
