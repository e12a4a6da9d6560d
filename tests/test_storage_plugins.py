"""Choosing a backend by name: built-ins imported only when chosen, third-party ones as plugins.

This module also holds the example third-party backend (:class:`ExampleStorageFactory`):
a distribution ships something like it and names it in its packaging, e.g.::

    [project.entry-points."pandapush.storage"]
    example = "tests.test_storage_plugins:ExampleStorageFactory"

or as a Twisted dropin ``pandapush/storage/plugins/example.py`` containing
``example_dropin = ExampleStorageFactory()``. Then ``DATABASE=example`` selects it.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Generator
from importlib.metadata import EntryPoint
from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.plugin import IPlugin
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from pandapush.storage import ENTRY_POINT_GROUP, findStorageFactory, makeStorage
from pandapush.storage.config import StorageConfig
from pandapush.storage.errors import StorageConfigError
from pandapush.storage.interfaces import IStorage, IStorageFactory
from pandapush.storage.memory import MemoryStorage

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


class ExampleStorage(MemoryStorage):
    """A third-party backend: here, memory that remembers which config made it."""

    name = "example"

    def __init__(self, config: StorageConfig) -> None:
        super().__init__()
        self.config = config


@implementer(IPlugin, IStorageFactory)
class ExampleStorageFactory:
    """The example plugin: provides IStorageFactory (and IPlugin, for the dropin route)."""

    name = "example"
    description = "An example third-party storage backend (memory, for tests)."

    def makeStorage(self, config: Any) -> IStorage:
        return ExampleStorage(config)


example_dropin = ExampleStorageFactory()


class NotAFactory:
    """Something a broken plugin might name: no IStorageFactory."""

    name = "broken"


@implementer(IStorageFactory)
class BadStorageFactory:
    """A factory whose storage lacks IStorage."""

    name = "bad"
    description = "makes the wrong thing"

    def makeStorage(self, config: Any) -> Any:
        return object()


def entryPoint(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


class BuiltinBackendTests(TestCase):
    """``DATABASE`` picks among the built-in backends."""

    def test_memory(self) -> None:
        """DATABASE=memory makes the in-memory backend."""
        storage = makeStorage({"DATABASE": "memory"})
        self.assertIsInstance(storage, MemoryStorage)
        verifyObject(IStorage, storage)

    def test_sqliteDefault(self) -> None:
        """Nothing configured means SQLite at localdata/db.sqlite, as upstream."""
        from pandapush.storage.sqlite import SQLiteStorage

        storage = makeStorage({})
        self.addCleanup(storage.close)
        self.assertIsInstance(storage, SQLiteStorage)
        assert isinstance(storage, SQLiteStorage)
        self.assertEqual(storage.path, os.path.join("localdata", "db.sqlite"))

    def test_sqlitePath(self) -> None:
        """DATABASE_PATH moves the SQLite file."""
        storage = makeStorage({"DATABASE": "sqlite", "DATABASE_PATH": "/tmp/elsewhere.sqlite"})
        self.addCleanup(storage.close)
        self.assertEqual(getattr(storage, "path", None), "/tmp/elsewhere.sqlite")

    def test_postgres(self) -> None:
        """DATABASE=postgres reads upstream's DATABASE_* variables (nothing connects until start)."""
        from pandapush.storage.postgres import PostgresStorage, connectionArguments

        env = {
            "DATABASE": "postgres",
            "DATABASE_ADDRESS": "db.example",
            "DATABASE_PORT": "6543",
            "DATABASE_USERNAME": "pp",
            "DATABASE_PASSWORD": "hunter2",
            "DATABASE_NAME": "pandapush",
        }
        storage = makeStorage(env)
        self.addCleanup(storage.close)
        self.assertIsInstance(storage, PostgresStorage)
        config = StorageConfig.fromEnvironment(env)
        arguments = connectionArguments(config)
        self.assertEqual(
            {k: arguments[k] for k in ("host", "port", "user", "password", "dbname")},
            {"host": "db.example", "port": 6543, "user": "pp", "password": "hunter2", "dbname": "pandapush"},
        )
        self.assertNotIn("hunter2", repr(config))

    def test_aliases(self) -> None:
        """knex's client names work too."""
        storage = makeStorage({"DATABASE": "postgresql"})
        self.addCleanup(storage.close)
        self.assertEqual(storage.name, "postgres")

    def test_badSchemaName(self) -> None:
        """A schema name that is not a plain identifier is refused rather than pasted into options."""
        self.assertRaises(ValueError, makeStorage, {"DATABASE": "postgres", "DATABASE_SCHEMA": "x -c evil=1"})

    def test_migrateFlag(self) -> None:
        """DATABASE_MIGRATE reads yes/no words; nonsense is refused."""
        self.assertEqual(StorageConfig.fromEnvironment({"DATABASE_MIGRATE": "yes"}).migrateAtStart, True)
        self.assertEqual(StorageConfig.fromEnvironment({"DATABASE_MIGRATE": "0"}).migrateAtStart, False)
        self.assertEqual(StorageConfig.fromEnvironment({}).migrateAtStart, None)
        self.assertRaises(ValueError, StorageConfig.fromEnvironment, {"DATABASE_MIGRATE": "maybe"})

    def test_importsOnlyChosen(self) -> None:
        """Choosing SQLite or memory imports neither the PostgreSQL module nor psycopg2."""
        code = (
            "import sys; from pandapush.storage import makeStorage;"
            "makeStorage({'DATABASE': 'memory'});"
            "print('pandapush.storage.postgres' in sys.modules, 'psycopg2' in sys.modules,"
            " 'pandapush.storage.sqlite' in sys.modules)"
        )
        output = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
        self.assertEqual(output.split(), ["False", "False", "False"])


class PluginBackendTests(TestCase):
    """Third-party backends found by name, checked, and refused clearly when broken."""

    @inlineCallbacks
    def test_entryPoint(self) -> Generator[Deferred[Any], Any, None]:
        """An entry point naming a factory class is loaded, instantiated, checked and used."""
        storage = makeStorage(
            {"DATABASE": "example", "EXAMPLE_SETTING": "42"},
            entryPoints=[
                entryPoint("other", "tests.test_storage_plugins:NotAFactory"),
                entryPoint("example", "tests.test_storage_plugins:ExampleStorageFactory"),
            ],
            pluginPackages=[],
        )
        self.assertIsInstance(storage, ExampleStorage)
        assert isinstance(storage, ExampleStorage)
        self.assertEqual(storage.config.environ["EXAMPLE_SETTING"], "42")
        yield storage.start()
        app = yield storage.createApplication("app", "alice")
        self.assertEqual((yield storage.getApplication(app.id)), app)

    def test_entryPointInstance(self) -> None:
        """An entry point may name a factory instance too."""
        factory = findStorageFactory(
            "example", entryPoints=[entryPoint("example", "tests.test_storage_plugins:example_dropin")]
        )
        self.assertIs(factory, example_dropin)

    def test_twistedDropin(self) -> None:
        """A Twisted dropin in a plugin package is found with getPlugins(IStorageFactory, package)."""
        root = os.path.abspath(self.mktemp())
        name = "pandapush_test_storage_dropins"
        folder = os.path.join(root, name)
        os.makedirs(folder)
        with open(os.path.join(folder, "__init__.py"), "w") as f:
            f.write("")
        with open(os.path.join(folder, "example_storage.py"), "w") as f:
            f.write("from tests.test_storage_plugins import example_dropin\n")
        sys.path.insert(0, root)
        self.addCleanup(sys.path.remove, root)
        for module in (name, name + ".example_storage"):
            self.addCleanup(sys.modules.pop, module, None)
        package = importlib.import_module(name)
        storage = makeStorage({"DATABASE": "example"}, entryPoints=[], pluginPackages=[package])
        self.assertIsInstance(storage, ExampleStorage)

    def test_defaultPluginPackage(self) -> None:
        """pandapush.storage.plugins is a plugin package spanning sys.path, shipping no plugin itself."""
        from twisted.plugin import getPlugins

        from pandapush.storage import plugins

        self.assertEqual([p for p in getPlugins(IStorageFactory, plugins) if p.name == "example"], [])

    def test_unknown(self) -> None:
        """An unknown name is refused, listing what is available."""
        error = self.assertRaises(
            StorageConfigError,
            makeStorage,
            {"DATABASE": "nosuch"},
            entryPoints=[entryPoint("example", "tests.test_storage_plugins:ExampleStorageFactory")],
            pluginPackages=[],
        )
        self.assertIn("nosuch", str(error))
        self.assertIn("example", str(error))
        self.assertIn("sqlite", str(error))

    def test_notAFactory(self) -> None:
        """A plugin not providing IStorageFactory is refused with a clear error."""
        error = self.assertRaises(
            StorageConfigError,
            makeStorage,
            {"DATABASE": "broken"},
            entryPoints=[entryPoint("broken", "tests.test_storage_plugins:NotAFactory")],
        )
        self.assertIn("does not provide IStorageFactory", str(error))

    def test_notAStorage(self) -> None:
        """A factory making something that is not an IStorage is refused."""
        error = self.assertRaises(
            StorageConfigError,
            makeStorage,
            {"DATABASE": "bad"},
            entryPoints=[entryPoint("bad", "tests.test_storage_plugins:BadStorageFactory")],
        )
        self.assertIn("not an IStorage", str(error))

    def test_unloadable(self) -> None:
        """An entry point whose module does not import is refused, naming it."""
        error = self.assertRaises(
            StorageConfigError,
            makeStorage,
            {"DATABASE": "gone"},
            entryPoints=[entryPoint("gone", "no_such_module_anywhere:factory")],
        )
        self.assertIn("no_such_module_anywhere", str(error))
