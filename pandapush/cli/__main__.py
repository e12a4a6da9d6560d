"""``python -m pandapush.cli``: the ``pandapush`` command."""

from pandapush.cli.main import main

main()
