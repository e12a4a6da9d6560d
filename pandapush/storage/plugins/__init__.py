"""Twisted dropins for third-party storage backends.

A distribution can ship ``pandapush/storage/plugins/<anything>.py`` holding an object
that provides both ``twisted.plugin.IPlugin`` and
:class:`pandapush.storage.interfaces.IStorageFactory`; ``DATABASE=<its name>`` then
selects it. Like ``twisted/plugins``, this package extends its path over every
``pandapush/storage/plugins`` folder on ``sys.path``, and ships no plugin itself.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # type: ignore[name-defined]
__all__: list[str] = []
