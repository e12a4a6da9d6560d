# Run with: twistd -ny pandapush.tac
# Same service as `twistd pandapush`; options come from PANDAPUSH_ARGS and the environment.
import os
import shlex

from twisted.application import service

from pandapush._process import foregroundWithoutPidfile, twistdOptions
from pandapush.tap import Options, makeService

options = Options()
options.parseOptions(shlex.split(os.environ.get("PANDAPUSH_ARGS", "")))
# As under `twistd pandapush`: a server that cannot start exits non-zero, and
# `twistd -n` writes no twistd.pid unless --pidfile asks for one.
options.ownsProcess, options.runnerOptions = True, twistdOptions()
foregroundWithoutPidfile(options.runnerOptions)
application = service.Application("pandapush")
makeService(options).setServiceParent(application)
