# Run with: twistd -ny pandapush.tac
# Same service as `twistd pandapush`; options come from PANDAPUSH_ARGS and the environment.
import os
import shlex

from pandapush.tap import tacApplication

application = tacApplication(shlex.split(os.environ.get("PANDAPUSH_ARGS", "")))
