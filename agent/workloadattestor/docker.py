"""The ``docker`` workload attestor: SPIRE's docker selectors from the Docker Engine API.

The caller's container ID comes from its /proc/<pid>/cgroup (:mod:`.containerinfo`); the
container's configuration from ``GET /containers/<id>/json`` on the daemon's unix socket.
Selectors (as SPIRE): ``docker:label:<key>:<value>`` per label, ``docker:env:<NAME>=<value>``
per environment variable, ``docker:image_id:<Config.Image>`` (the image name the container was
created from) and ``docker:image_config_digest:<id>`` (``GET /images/<name>/json``'s ``Id``).
A process in no container gets no docker selectors.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plastron.agent.workloadattestor.containerinfo import container_info, read_cgroups
from plastron.agent.workloadattestor.httpget import Endpoint, HttpGetError, get_json
from plastron.agent.workloadattestor.selector_values import log, selectors_of
from plastron.configs.block import Block
from plastron.configs.plugin_blocks import PluginConfig
from plastron.errors import AttestationFailed, ConfigError
from plastron.plugins import PluginContext, Registries
from plastron.selector import Selector

NAME = "docker"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
# An inspect document is a few KiB; allow for very large env and label sets.
MAX_INSPECT_BYTES = 4 * 1024 * 1024
# SPIRE retries the inspect call 3 times, backing off 100, 200, 400 ms: a container that has
# just started may not be known to the daemon yet.
RETRY_BACKOFFS = (0.1, 0.2, 0.4)
_API_VERSION = re.compile(r"[0-9]+\.[0-9]+")


@dataclass(frozen=True)
class DockerConfig:
    docker_socket_path: str = DEFAULT_SOCKET
    docker_version: str | None = None

    @classmethod
    def from_settings(cls, settings: Block) -> DockerConfig:
        socket = settings.string("docker_socket_path", cls.docker_socket_path)
        version = settings.optional_string("docker_version")
        # SPIRE's switch between its two cgroup parsers; only the current one exists here.
        if not settings.boolean("use_new_container_locator", True):
            raise ConfigError(
                f"{settings.where('use_new_container_locator')}: only the current container "
                "locator is implemented; remove the key or set it to true"
            )
        settings.boolean("verbose_container_locator_logs", False)
        settings.finish()
        if not socket.startswith("unix://") or len(socket) == len("unix://"):
            raise ConfigError(
                f"{settings.where('docker_socket_path')} must be a unix:// socket, got {socket!r}"
            )
        if version is not None and not _API_VERSION.fullmatch(version):
            raise ConfigError(
                f"{settings.where('docker_version')} must look like 1.41, got {version!r}"
            )
        return cls(socket, version)


class DockerWorkloadAttestor:
    name = NAME

    def __init__(
        self,
        config: DockerConfig | None = None,
        *,
        proc_root: Path = Path("/proc"),
        retry_backoffs: tuple[float, ...] = RETRY_BACKOFFS,
    ) -> None:
        self._config = config or DockerConfig()
        self._proc_root = proc_root
        self._retry_backoffs = retry_backoffs
        self._endpoint = Endpoint(unix_socket=self._config.docker_socket_path[len("unix://") :])
        version = self._config.docker_version
        self._prefix = f"/v{version}" if version else ""

    async def attest(self, pid: int) -> list[Selector]:
        cgroups = await asyncio.to_thread(read_cgroups, self._proc_root, pid, NAME)
        try:
            container_id = container_info(cgroups).container_id
        except AttestationFailed as exc:
            raise AttestationFailed(f"{NAME}: process {pid}: {exc}") from None
        if container_id is None:
            return []
        inspect = await self._inspect_container(container_id)
        config = _object(inspect.get("Config") or {}, "Config", container_id)
        selectors = _config_selectors(config, container_id)
        image = config.get("Image")
        if isinstance(image, str) and image:
            digest = await self._image_config_digest(image)
            if digest:
                selectors += selectors_of(NAME, [f"image_config_digest:{digest}"])
        return selectors

    async def _inspect_container(self, container_id: str) -> dict[str, Any]:
        path = f"{self._prefix}/containers/{container_id}/json"
        for backoff in (*self._retry_backoffs, None):
            try:
                body = await asyncio.to_thread(get_json, self._endpoint, path, MAX_INSPECT_BYTES)
                return _object(body, "the inspect document", container_id)
            except HttpGetError as exc:
                if backoff is None:
                    raise AttestationFailed(f"{NAME}: {exc}") from None
                await asyncio.sleep(backoff)
        raise AssertionError("unreachable")

    async def _image_config_digest(self, image: str) -> str | None:
        """The image's config digest, or None when the daemon cannot say (as SPIRE: the
        selector is then left out, attestation goes on)."""
        if ".." in image:
            # not an image reference Docker accepts; never let it steer the request path
            log.warning("%s: image %r not inspected: not an image reference", NAME, image)
            return None
        path = f"{self._prefix}/images/{urllib.parse.quote(image, safe=':@')}/json"
        try:
            body = await asyncio.to_thread(get_json, self._endpoint, path, MAX_INSPECT_BYTES)
        except HttpGetError as exc:
            log.warning("%s: image %r not inspected: %s", NAME, image, exc)
            return None
        digest = body.get("Id") if isinstance(body, dict) else None
        return digest if isinstance(digest, str) and digest else None


def _object(value: object, what: str, container_id: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AttestationFailed(f"{NAME}: container {container_id}: {what} is not an object")
    return value


def _config_selectors(config: dict[str, Any], container_id: str) -> list[Selector]:
    labels = config.get("Labels") or {}
    env = config.get("Env") or []
    image = config.get("Image") or ""
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise AttestationFailed(f"{NAME}: container {container_id}: Config.Labels is malformed")
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise AttestationFailed(f"{NAME}: container {container_id}: Config.Env is malformed")
    if not isinstance(image, str):
        raise AttestationFailed(f"{NAME}: container {container_id}: Config.Image is malformed")
    values = [f"label:{k}:{v}" for k, v in labels.items()]
    values += [f"env:{e}" for e in env]
    if image:
        values.append(f"image_id:{image}")
    return selectors_of(NAME, values)


def check(plugin: PluginConfig, context: PluginContext) -> None:
    DockerConfig.from_settings(plugin.settings())


def create(plugin: PluginConfig, context: PluginContext) -> DockerWorkloadAttestor:
    return DockerWorkloadAttestor(DockerConfig.from_settings(plugin.settings()))


def register(registries: Registries) -> None:
    registries.workload_attestors.register(NAME, create, check=check)
