# Run with: twistd -ny pandapush.tac
# Same service as `twistd pandapush`; options come from PANDAPUSH_ARGS and the environment.
import os
import shlex

from twisted.application import service

from pandapush.tap import Options, makeService

options = Options()
options.parseOptions(shlex.split(os.environ.get("PANDAPUSH_ARGS", "")))
application = service.Application("pandapush")
makeService(options).setServiceParent(application)
