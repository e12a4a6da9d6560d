"""
``--workers N``: N pandapush processes serving one port on one machine.

The process started by ``twistd pandapush`` (worker 0) binds the listening
sockets, migrates and seeds the storage, then starts N-1 copies of itself that
inherit those sockets as file descriptors 3, 4, ... and adopt them
(``reactor.adoptStreamPort``). Every process accepts on the same sockets and is a
full node on the Redis engine, so a client may land on any of them and keep its
session.

A copy is the same program: ``python -m twisted --log-format json pandapush`` with
the parent's own options, its environment, and ``PANDAPUSH_WORKER`` naming its
index and the inherited descriptors (:class:`~pandapush.config.WorkerSpec`). So
the workers are built by the very ``makeService`` that built the parent, from the
same :class:`~pandapush.config.Configuration` but for that one variable (a
worker adopts its sockets, starts no workers, and watches its parent), and this
package never imports ``pandapush.tap``: it names the twistd plugin, as
``twistd`` itself does. ``twist`` writes the worker's log as JSON lines on its
stdout, which the parent relays. (The alternative, an entry point of our own that
imports ``tap``, would make the pool and the server each depend on the other.)

- :mod:`~pandapush.workers.sockets`: the listening sockets (shared, adopted, or
  ``SO_REUSEPORT``);
- :mod:`~pandapush.workers.pool`: the parent's :class:`~pandapush.workers.pool.WorkerPool`;
- :mod:`~pandapush.workers.child`: what a worker does besides serving.

Why one shared socket rather than ``SO_REUSEPORT`` (one socket per process,
balanced by a hash of the 4-tuple): connections waiting in the accept queue
belong to every worker, so a worker that crashes or is restarted loses none of
them (with ``SO_REUSEPORT`` the kernel resets those queued on the dead socket);
a busy worker leaves new connections to an idle one (whoever calls ``accept``
first gets it) instead of receiving its hash share regardless of load; it works
on every POSIX system and with ``tcp:0``; and no other process of the same user
can join the group and steal connections.

The cost of sharing is balance: among idle workers the one the kernel wakes first
wins, so connections opened one by one on a quiet machine were seen spread from
50/50 to 83/17 over two workers. ``--reuse-port`` (Linux) trades the points above
for an even spread: every process listens on a socket of its own, bound with
``SO_REUSEPORT`` (the parent makes them all, when it starts a worker, so ``tcp:0``
works and a worker binds nothing; a port below 1024 needs the parent to keep the
right to bind it, as for its own listener), and the kernel hashes each new
connection to one of them. A worker's
socket lives only in that worker: when it dies, the kernel stops sending it
connections, and resets those that were waiting in its queue.

The parent owns its workers: it restarts one that exits with a backoff, relays
their log events into its own log (``log_system`` prefixed ``worker-<i>``), and on
stop sends them SIGTERM and waits for their drain (``--shutdown-grace``), killing
stragglers. A worker leaves by itself when its stdin, a pipe from the parent,
reaches end of file: the parent was SIGKILLed, so nobody else would stop it.
"""
