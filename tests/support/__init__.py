"""Helpers shared by the end-to-end tests: a pandapush child process, the Node clients."""
