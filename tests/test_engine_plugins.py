"""Choosing an engine by name: the built-in two, third-party ones by entry point, ``--engine``.

This module also holds the example third-party engine (:class:`ExampleEngineFactory`): a
distribution ships something like it and names it in its packaging, e.g.::

    [project.entry-points."pandapush.engines"]
    example = "tests.test_engine_plugins:ExampleEngineFactory"

Then ``--engine example`` (or ``ENGINE=example``) selects it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
import uuid
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import TestCase
from zope.interface import implementer
from zope.interface.verify import verifyClass, verifyObject

import tests
from pandapush.engines import (
    BUILTIN_ENGINES,
    DEFAULT_REDIS_HOSTS,
    ENTRY_POINT_GROUP,
    EngineConfig,
    EngineConfigError,
    chooseEngine,
    findEngineFactory,
    makeEngine,
)
from pandapush.engines.factories import MemoryEngineFactory, RedisEngineFactory
from pandapush.engines.memory import MemoryEngine
from pandapush.engines.redis import RedisEngine
from pandapush.interfaces import IEngine, IEngineFactory
from pandapush.redis import parseRedisHosts
from pandapush.tap import Options, makeService
from tests.engine_suite import EngineTestsMixin
from tests.support.redis import REDIS, deleteNamespace, requireRedis

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ExampleEngine(MemoryEngine):
    """A third-party engine: here, the memory engine remembering which config made it."""

    def __init__(self, reactor: Any, config: EngineConfig) -> None:
        super().__init__(reactor, timeout=config.timeout, expiry=config.clientExpiry)
        self.config = config


@implementer(IEngineFactory)
class ExampleEngineFactory:
    name = "example"
    description = "An example third-party engine (memory, for tests)."
    shared = False

    def makeEngine(self, reactor: Any, config: EngineConfig) -> IEngine:
        return ExampleEngine(reactor, config)


example = ExampleEngineFactory()


class NotAFactory:
    """Something a broken plugin might name: no IEngineFactory."""

    name = "broken"


@implementer(IEngineFactory)
class NotAnEngineFactory:
    """A factory whose engine lacks most of IEngine."""

    name = "bad"
    description = "makes the wrong thing"
    shared = False

    def makeEngine(self, reactor: Any, config: EngineConfig) -> Any:
        return object()


def entryPoint(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


class BuiltinEngineTests(TestCase):
    """``memory`` and ``redis``, found without package metadata, checked like any plugin."""

    def test_factoriesProvideIEngineFactory(self) -> None:
        """Both built-in factories provide IEngineFactory under the name they are registered by."""
        self.assertEqual(set(BUILTIN_ENGINES), {"memory", "redis"})
        for name, factory in BUILTIN_ENGINES.items():
            self.assertTrue(verifyObject(IEngineFactory, factory))
            self.assertEqual(factory.name, name)
        self.assertTrue(verifyClass(IEngineFactory, MemoryEngineFactory))
        self.assertTrue(verifyClass(IEngineFactory, RedisEngineFactory))
        self.assertEqual((BUILTIN_ENGINES["memory"].shared, BUILTIN_ENGINES["redis"].shared), (False, True))

    def test_enginesProvideIEngine(self) -> None:
        """Both built-in engine classes provide IEngine."""
        self.assertTrue(verifyClass(IEngine, MemoryEngine))
        self.assertTrue(verifyClass(IEngine, RedisEngine))

    def test_memory(self) -> None:
        """``memory`` makes a MemoryEngine with the configured timeout and client expiry."""
        engine = makeEngine("memory", Clock(), EngineConfig(timeout=5.0, clientExpiry=3.0))
        self.addCleanup(engine.close)
        self.assertIsInstance(engine, MemoryEngine)
        self.assertTrue(verifyObject(IEngine, engine))
        self.assertEqual((engine.timeout, engine.expiry), (5.0, 3.0))  # type: ignore[attr-defined]

    def test_redis(self) -> None:
        """``redis`` makes a RedisEngine on the configured shards and namespace."""
        requireRedis()
        namespace = f"pandapush-test-{uuid.uuid4().hex}"
        addresses = parseRedisHosts(REDIS)
        self.addCleanup(lambda: defer.Deferred.fromCoroutine(deleteNamespace(addresses, namespace)))
        engine = makeEngine(
            "redis",
            reactor,
            EngineConfig(timeout=5.0, clientExpiry=3.0, redisHosts=REDIS, redisNamespace=namespace),
        )
        self.addCleanup(engine.close)
        self.assertIsInstance(engine, RedisEngine)
        assert isinstance(engine, RedisEngine)
        self.assertTrue(verifyObject(IEngine, engine))
        self.assertEqual((engine.namespace, engine.addresses), (namespace, addresses))
        self.assertEqual((engine.timeout, engine.expiry), (5.0, 3.0))

    def test_redisDefaultHosts(self) -> None:
        """``redis`` without Redis hosts uses the default, 127.0.0.1:6379."""
        engine = makeEngine(
            "redis", reactor, EngineConfig(redisNamespace=f"pandapush-test-{uuid.uuid4().hex}")
        )
        self.addCleanup(engine.close)
        assert isinstance(engine, RedisEngine)
        self.assertEqual(engine.addresses, parseRedisHosts(DEFAULT_REDIS_HOSTS))

    def test_badRedisHosts(self) -> None:
        """A malformed REDIS_HOSTS is refused with an EngineConfigError saying what is wrong."""
        error = self.assertRaises(
            EngineConfigError, makeEngine, "redis", reactor, EngineConfig(redisHosts="r1:notaport")
        )
        self.assertIn("REDIS_HOSTS 'r1:notaport'", str(error))

    def test_choose(self) -> None:
        """A chosen name wins; without one, Redis hosts imply ``redis``; else ``memory``."""
        self.assertEqual(chooseEngine(None, None), "memory")
        self.assertEqual(chooseEngine("", ""), "memory")
        self.assertEqual(chooseEngine(None, "r:6379"), "redis")
        self.assertEqual(chooseEngine("redis", None), "redis")
        self.assertEqual(chooseEngine("memory", "r:6379"), "memory")
        self.assertEqual(chooseEngine("example", "r:6379"), "example")

    def test_importsOnlyChosen(self) -> None:
        """Making the memory engine (or building the server's options) loads nothing of Redis."""
        code = (
            "import sys\n"
            "from twisted.internet.task import Clock\n"
            "import pandapush.tap\n"
            "from pandapush.engines import makeEngine\n"
            "makeEngine('memory', Clock())\n"
            "redis = ('txredisapi', 'pandapush.engines.redis', 'pandapush.redis')\n"
            "print(any(m in sys.modules for m in redis))\n"
        )
        output = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        self.assertEqual(output.split(), ["False"])

    def test_everyEngineRunsTheSuite(self) -> None:
        """
        Every engine we ship or register has a test case running ``tests/engine_suite.py``
        (a ``tests/test_engine_*`` class mixing in EngineTestsMixin, naming the engine).
        """
        registered = set(BUILTIN_ENGINES) | {
            e.name for e in entry_points(group=ENTRY_POINT_GROUP) if e.value.startswith("pandapush.")
        }
        covered: set[str] = set()
        for info in pkgutil.iter_modules(tests.__path__):
            if info.name.startswith("test_engine_"):
                module = importlib.import_module(f"tests.{info.name}")
                covered |= {
                    value.engineName
                    for value in vars(module).values()
                    if inspect.isclass(value) and issubclass(value, EngineTestsMixin)
                }
        self.assertEqual(registered - covered, set())


class PluginEngineTests(TestCase):
    """Third-party engines found by name, checked, and refused clearly when broken."""

    def test_entryPoint(self) -> None:
        """An entry point naming a factory class is loaded, instantiated, checked and used."""
        config = EngineConfig(timeout=7.0, environ={"EXAMPLE_SETTING": "42"})
        engine = makeEngine(
            "example",
            Clock(),
            config,
            entryPoints=[
                entryPoint("other", "tests.test_engine_plugins:NotAFactory"),
                entryPoint("example", "tests.test_engine_plugins:ExampleEngineFactory"),
            ],
        )
        self.addCleanup(engine.close)
        self.assertIsInstance(engine, ExampleEngine)
        assert isinstance(engine, ExampleEngine)
        self.assertEqual(engine.config.environ["EXAMPLE_SETTING"], "42")
        self.assertEqual(engine.timeout, 7.0)

    def test_entryPointInstance(self) -> None:
        """An entry point may name a factory instance too."""
        factory = findEngineFactory(
            "example", entryPoints=[entryPoint("example", "tests.test_engine_plugins:example")]
        )
        self.assertIs(factory, example)

    def test_builtinsFirst(self) -> None:
        """A plugin cannot take a built-in engine's name."""
        factory = findEngineFactory(
            "memory", entryPoints=[entryPoint("memory", "tests.test_engine_plugins:example")]
        )
        self.assertIs(factory, BUILTIN_ENGINES["memory"])

    def test_unknown(self) -> None:
        """An unknown name is refused, listing what is available."""
        error = self.assertRaises(
            EngineConfigError,
            makeEngine,
            "nosuch",
            Clock(),
            entryPoints=[entryPoint("example", "tests.test_engine_plugins:ExampleEngineFactory")],
        )
        self.assertIn("unknown engine 'nosuch'", str(error))
        for name in ("example", "memory", "redis"):
            self.assertIn(name, str(error))

    def test_notAFactory(self) -> None:
        """A plugin not providing IEngineFactory is refused with a clear error."""
        error = self.assertRaises(
            EngineConfigError,
            makeEngine,
            "broken",
            Clock(),
            entryPoints=[entryPoint("broken", "tests.test_engine_plugins:NotAFactory")],
        )
        self.assertIn("does not provide IEngineFactory", str(error))

    def test_notAnEngine(self) -> None:
        """A factory making something that is not an IEngine is refused."""
        error = self.assertRaises(
            EngineConfigError,
            makeEngine,
            "bad",
            Clock(),
            entryPoints=[entryPoint("bad", "tests.test_engine_plugins:NotAnEngineFactory")],
        )
        self.assertIn("not an IEngine", str(error))

    def test_unloadable(self) -> None:
        """An entry point whose module does not import is refused, naming it."""
        error = self.assertRaises(
            EngineConfigError,
            makeEngine,
            "gone",
            Clock(),
            entryPoints=[entryPoint("gone", "no_such_module_anywhere:factory")],
        )
        self.assertIn("no_such_module_anywhere", str(error))


class EngineOptionTests(TestCase):
    """``--engine``/``ENGINE`` in ``twistd pandapush``; ``--redis-hosts``/``REDIS_HOSTS`` imply redis."""

    def parse(self, *argv: str, **env: str) -> Options:
        environ = {k: v for k, v in os.environ.items() if k not in ("ENGINE", "REDIS_HOSTS", "WORKERS")}
        self.patch(os, "environ", {**environ, **env})
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_choice(self) -> None:
        """The option, then ENGINE, then Redis hosts, decide; memory by default."""
        memory, redis = BUILTIN_ENGINES["memory"], BUILTIN_ENGINES["redis"]
        self.assertIs(self.parse().engineFactory, memory)
        self.assertIs(self.parse("--engine", "redis").engineFactory, redis)
        self.assertIs(self.parse(ENGINE="redis").engineFactory, redis)
        self.assertIs(self.parse("--redis-hosts", "r:6379").engineFactory, redis)
        self.assertIs(self.parse(REDIS_HOSTS="r:6379").engineFactory, redis)
        self.assertIs(self.parse("--engine", "memory", ENGINE="redis").engineFactory, memory)
        self.assertIs(self.parse("--engine", "memory", REDIS_HOSTS="r:6379").engineFactory, memory)

    def test_unknownRefused(self) -> None:
        """An unknown engine is a usage error naming it and what is available."""
        for argv, env in ((["--engine", "nosuch"], {}), ([], {"ENGINE": "nosuch"})):
            with self.assertRaises(usage.UsageError) as refused:
                self.parse(*argv, **env)
            self.assertIn("unknown engine 'nosuch'", str(refused.exception))
            self.assertIn("memory, redis", str(refused.exception))

    def test_memoryWithRedisHostsRefused(self) -> None:
        """--engine memory with --redis-hosts on the same command line contradicts itself."""
        with self.assertRaises(usage.UsageError) as refused:
            self.parse("--engine", "memory", "--redis-hosts", "r:6379")
        self.assertIn("does not apply with --engine memory", str(refused.exception))

    def test_workersWithEngineRedis(self) -> None:
        """--workers accepts --engine redis without hosts (the default Redis), and refuses memory."""
        self.assertEqual(self.parse("--workers", "2", "--engine", "redis")["workers"], 2)
        with self.assertRaises(usage.UsageError) as refused:
            self.parse("--workers", "2", "--engine", "memory")
        self.assertIn("needs the Redis engine", str(refused.exception))

    def test_serviceUsesChosenEngine(self) -> None:
        """makeService builds the chosen engine: --engine redis alone is the default Redis, shared."""
        options = self.parse("--engine", "redis", "--database", "memory", "--listen", "tcp:0")
        namespace = f"pandapush-test-{uuid.uuid4().hex}"
        service: Any = makeService(options, environ={"REDIS_NAMESPACE": namespace})
        self.addCleanup(service.engine.close)
        # The webhook outbox (on the same Redis) connects when made; a started service's
        # sender closes it when it stops, and this one is never started.
        self.addCleanup(service.webhooks.outbox.close)
        self.assertIsInstance(service.engine, RedisEngine)
        self.assertEqual(service.engine.addresses, parseRedisHosts(DEFAULT_REDIS_HOSTS))
        self.assertEqual(service.engine.namespace, namespace)
        # Key sync comes with the Redis engine, on the same Redis.
        self.assertEqual(service.keysync.address, parseRedisHosts(DEFAULT_REDIS_HOSTS)[0])
        memory: Any = makeService(self.parse("--database", "memory", "--listen", "tcp:0"), environ={})
        self.assertIsInstance(memory.engine, MemoryEngine)
        self.assertIsNone(memory.keysync)

    def test_serviceRefusesUnknown(self) -> None:
        """makeService refuses an unknown engine too (ENGINE in the environment it is given)."""
        options = self.parse("--database", "memory", "--listen", "tcp:0")
        error = self.assertRaises(EngineConfigError, makeService, options, environ={"ENGINE": "nosuch"})
        self.assertIn("unknown engine 'nosuch'", str(error))
