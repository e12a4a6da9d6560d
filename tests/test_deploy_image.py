"""
The container image: built from the repository's ``Dockerfile`` and run, as a user would.

The image is built with buildah on a base made from Debian's packages and run with
``buildah run`` (see ``tests/support/container.py`` for how, and what differs from
``docker run``). Then, over real sockets on 127.0.0.1: upstream's README run
(``AUTH_METHOD=basic ADMIN_USERNAME=admin ADMIN_PASSWORD=password``) serves the
health check and the console; an application and key made through the admin API
carry a REST publish to a websocket subscriber; the server runs as the image's
unprivileged user; SIGTERM stops it; everything it wrote is in the ``/data`` volume,
nothing in the image's file system, and a new container on the same volume carries
on with the same key and the same generated admin password.

The first build takes about two minutes (mmdebstrap, then pip downloading the
dependencies); later runs reuse the cached base and buildah's layer cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from twisted.trial.unittest import TestCase

from tests.support.container import ContainerServer, Image, builtImage, processIds
from tests.support.deploy import (
    basicAuth,
    createAppAndKey,
    generatedAdminCredentials,
    publishReachesSubscriber,
    request,
)

#: The image's user (Dockerfile: USER 10001:10001).
IMAGE_UID = 10001
#: Upstream's README: docker run -e AUTH_METHOD=basic -e ADMIN_USERNAME=admin -e ADMIN_PASSWORD=password
README_ENV = {"AUTH_METHOD": "basic", "ADMIN_USERNAME": "admin", "ADMIN_PASSWORD": "password"}


class ImageTests(TestCase):
    # The first build on a new machine: mmdebstrap and pip over the network.
    timeout = 1200

    def volume(self) -> Path:
        """A host directory for /data, owned by the image's user as a fresh volume would be."""
        path = Path(tempfile.mkdtemp(prefix="pandapush-volume-"))
        self.addCleanup(shutil.rmtree, path, True)
        path.chmod(0o750)
        os.chown(path, IMAGE_UID, IMAGE_UID)
        return path

    async def started(self, image: Image, volume: Path, env: dict[str, str]) -> ContainerServer:
        server = await ContainerServer.created(self, image, volume, env)
        await server.start()
        return server

    async def test_imageConfiguration(self) -> None:
        """
        The image runs ``twistd --nodaemon --pidfile= pandapush`` as an unprivileged
        numeric user, keeps its data in a /data volume, listens on $PORT 3000, and
        has a HEALTHCHECK; the venv built in the first stage is on PATH.
        """
        image = await builtImage()
        config = image.config
        self.assertEqual(image.command, ["twistd", "--nodaemon", "--pidfile=", "pandapush"])
        self.assertEqual(config["User"], f"{IMAGE_UID}:{IMAGE_UID}")
        self.assertEqual(list(config.get("Volumes") or {}), ["/data"])
        self.assertEqual(config["WorkingDir"], "/data")
        self.assertEqual(list(config.get("ExposedPorts") or {}), ["3000/tcp"])
        env = image.environment
        self.assertEqual(env["PORT"], "3000")
        self.assertEqual(env["DATABASE_PATH"], "/data/db.sqlite")
        self.assertEqual(env["PANDAPUSH_DATA_DIR"], "/data")
        self.assertTrue(env["PATH"].startswith("/opt/pandapush/bin:"), env["PATH"])
        self.assertEqual(image.healthcheck, ["pandapush-healthcheck"])

    async def test_readmeRunPublishesAndKeepsDataInTheVolume(self) -> None:
        """
        Upstream's README run: console login, an application and key, a REST publish
        delivered to a websocket subscriber; the health check and the image's
        HEALTHCHECK; non-root; a clean SIGTERM stop; the data in the volume only,
        and a second container on it carries on with the same key.
        """
        image = await builtImage()
        volume = self.volume()
        server = await ContainerServer.created(self, image, volume, README_ENV)
        rootfs = await server.mount()
        # Anything newer than this (but the volume) was written into the container's layer.
        stamp = rootfs / "tmp" / ".pandapush-test-stamp"
        stamp.touch()
        await server.start()

        health = await request("GET", server.url + "/health_check.json")
        self.assertEqual(health.code, 200, health.body)
        self.assertEqual(health.json()["rev"], image.revision)
        code, output = await server.exec(*image.healthcheck)
        self.assertEqual(code, 0, output)
        # ... which does check: pointed at a port nobody listens on, it fails.
        code, output = await server.exec(*image.healthcheck, env={"PORT": "1"})
        self.assertEqual(code, 1, output)  # (its message may not come through buildah run)

        self.assertEqual(processIds(server.serverPid()), (IMAGE_UID, IMAGE_UID))

        wrong = await request("GET", server.url + "/admin/api/applications", headers=basicAuth("admin", "x"))
        self.assertEqual(wrong.code, 401)
        appId, key = await createAppAndKey(server.url, basicAuth("admin", "password"))
        delivered, details = await publishReachesSubscriber(server.url, server.url, appId, key)
        self.assertTrue(delivered, f"{details}\n{server.log()}")

        # docker stop: SIGTERM to the main process, which shuts down in order.
        await server.stop()
        self.assertIn("Server Shut Down.", server.log())

        since = stamp.stat().st_mtime
        written = [
            str(p.relative_to(rootfs))
            for p in rootfs.rglob("*")
            if p != stamp
            and not p.is_symlink()
            and p.stat().st_mtime > since
            and p.relative_to(rootfs).parts[0] not in ("proc", "sys", "dev", "run")
        ]
        self.assertEqual(written, [], "written into the image's file system instead of /data")
        self.assertIn("db.sqlite", {p.name for p in volume.iterdir()})

        again = await self.started(image, volume, README_ENV)
        published = await request(
            "POST", f"{again.url}/channel/{appId}/public/x", {"n": 2}, basicAuth(key["id"], key["secret"])
        )
        self.assertEqual(published.code, 200, published.body)
        await again.stop()

    async def test_generatedAdminPasswordLivesInTheVolume(self) -> None:
        """
        With no ADMIN_* settings the server makes an admin password on its first
        start; a new container on the same volume accepts it: it was kept in /data,
        not in the container that is gone.
        """
        image = await builtImage()
        volume = self.volume()
        first = await self.started(image, volume, {})
        await first.stop()
        admin = generatedAdminCredentials(first.log())
        self.assertIsNotNone(admin, f"no generated admin password in the log:\n{first.log()}")
        assert admin is not None

        second = await self.started(image, volume, {})
        accepted = await request("GET", second.url + "/admin/api/applications", headers=admin)
        self.assertEqual(accepted.code, 200, accepted.body)
        await second.stop()

    async def test_jsonLogs(self) -> None:
        """
        ``-e PANDAPUSH_LOG_FORMAT=json``: the server's log is JSON lines, the listening
        event with its fields; no line in twistd's text format is left.
        """
        image = await builtImage()
        server = await self.started(image, self.volume(), {**README_ENV, "PANDAPUSH_LOG_FORMAT": "json"})
        await request("GET", server.url + "/no/such/page")
        await server.stop()
        lines = [line.split("] ", 1)[1] for line in server.output if "] " in line]
        text = [line for line in lines if re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[", line)]
        self.assertEqual(text, [], "text log lines")
        records = [json.loads(line) for line in lines if line.startswith("{")]
        listening = [
            r for r in records if r.get("namespace") == "pandapush.services.StorageService" and "url" in r
        ]
        self.assertEqual([r["url"] for r in listening], [server.url], records)
        self.assertTrue(any(r["text"] == "Server Shut Down." for r in records), records)
