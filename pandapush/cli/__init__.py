"""The ``pandapush`` command: what operators do without the admin UI.

::

    pandapush migrate
    pandapush app create testapp --admin alice
    pandapush key create <appId> --purpose server --expires 1y
    pandapush token <keyId> --channel /<appId>/private/x --sub --expires 1h
    pandapush publish /<appId>/public/messages '{"foo": "bar"}' --key PSID... --secret ...

The database comes from upstream's variables (``DATABASE``, ``DATABASE_PATH``,
``DATABASE_ADDRESS``...) or the ``--database*`` options, which may be given before
or after the subcommand. ``--json`` prints machine-readable output. Upstream's
command names (``add``, ``addKey``, ``show``, ``genToken``) work too.

Running servers cache keys for a minute. With ``REDIS_HOSTS`` (``--redis-hosts``)
and ``REDIS_NAMESPACE`` as the servers have them, commands that create, revoke or
delete keys or delete applications also PUBLISH the invalidation the servers' key
sync applies, so they act at once. If Redis cannot be reached the change is still
made (it is in the database) and the command exits 0 with a warning: a failure
status would read as "not revoked", and retrying a delete that did happen fails.

Storage calls run on the reactor (``task.react``); :func:`run` is the same command
as a Deferred, for tests and for embedding.

The modules: :mod:`~pandapush.cli.main` (the parser, :func:`run`, :func:`main`),
:mod:`~pandapush.cli.options` (the database and Redis options, declared once),
:mod:`~pandapush.cli.context` (one run: storage, output, the Redis broadcast), and a
module per command group: :mod:`~pandapush.cli.server` (``migrate``, ``serve``),
:mod:`~pandapush.cli.apps`, :mod:`~pandapush.cli.keys`, :mod:`~pandapush.cli.tokens`,
:mod:`~pandapush.cli.publish`, :mod:`~pandapush.cli.upstream` (upstream's names).
"""

from pandapush.cli.durations import parseDuration, parseExpiry
from pandapush.cli.main import buildParser, main, run

__all__ = ["buildParser", "main", "parseDuration", "parseExpiry", "run"]
