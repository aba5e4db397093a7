"""Where a cloud attestor's server half gets the provider's JSON Web Key Set: a URL, fetched
and cached, or a file.

A fetched set is kept for the response's ``Cache-Control: max-age``, bounded to
[:data:`MIN_REFRESH`, :data:`MAX_REFRESH`] (:data:`DEFAULT_REFRESH` when the header says
nothing), so neither a zero max-age nor a year-long one changes how often the server asks. A
token naming a ``kid`` the cached set lacks triggers one early refresh (keys rotate), at most
once per :data:`MIN_REFRESH`, so a stream of made-up key ids cannot make the server hammer the
provider. When a refresh fails the cached set stays in use (and the failure is logged) until
:data:`MAX_STALE` after it was fetched; with no usable set the attestation is refused with the
reason. A file is read again whenever its modification time changes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from pathlib import Path

from plastron.attestors.cloud_http import check_secure_url, request
from plastron.attestors.jwks import MAX_JWKS_BYTES, KeySet, parse_key_set
from plastron.clock import Clock
from plastron.configs.block import Block
from plastron.errors import AttestationFailed, ConfigError, Unavailable

log = logging.getLogger(__name__)
MIN_REFRESH = dt.timedelta(minutes=1)
DEFAULT_REFRESH = dt.timedelta(hours=1)
MAX_REFRESH = dt.timedelta(hours=24)
MAX_STALE = dt.timedelta(hours=48)
_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d{1,10})\"?", re.IGNORECASE)


def refresh_interval(cache_control: str | None) -> dt.timedelta:
    """How long to keep a set fetched with this ``Cache-Control`` header (bounded)."""
    match = _MAX_AGE.search(cache_control or "")
    if match is None:
        return DEFAULT_REFRESH
    return min(MAX_REFRESH, max(MIN_REFRESH, dt.timedelta(seconds=int(match.group(1)))))


class KeySource:
    """The current key set of one provider, for one attestor."""

    async def get(self, kid: str | None = None) -> KeySet:
        """A key set that holds ``kid`` if the provider publishes it."""
        raise NotImplementedError


class UrlKeySource(KeySource):
    def __init__(self, url: str, *, method: str, clock: Clock) -> None:
        self.url = url
        self._method = method
        self._clock = clock
        self._lock = asyncio.Lock()
        self._keys: KeySet | None = None
        self._fetched_at: dt.datetime | None = None
        self._fresh_until: dt.datetime | None = None
        self._last_attempt: dt.datetime | None = None

    def __repr__(self) -> str:
        return f"UrlKeySource({self.url!r})"

    async def get(self, kid: str | None = None) -> KeySet:
        async with self._lock:
            now = self._clock.now()
            if self._needs_refresh(now, kid):
                await self._refresh(now)
            if self._keys is None or self._fetched_at is None:
                raise AttestationFailed(f"{self._method}: no key set from {self.url} yet")
            if now - self._fetched_at > MAX_STALE:
                raise AttestationFailed(
                    f"{self._method}: the key set from {self.url} is older than {MAX_STALE} "
                    "and cannot be refreshed"
                )
            return self._keys

    def _needs_refresh(self, now: dt.datetime, kid: str | None) -> bool:
        if self._keys is None or self._fresh_until is None:
            return True
        if self._last_attempt is not None and now - self._last_attempt < MIN_REFRESH:
            return False
        return now >= self._fresh_until or (kid is not None and kid not in self._keys)

    async def _refresh(self, now: dt.datetime) -> None:
        self._last_attempt = now
        try:
            keys, interval = await self._fetch()
        except (Unavailable, AttestationFailed) as exc:
            if self._keys is None:
                raise AttestationFailed(str(exc)) from None  # it names the method and URL
            log.warning(
                "key set refresh failed; using the cached set url=%s error=%s", self.url, exc
            )
            return
        self._keys, self._fetched_at, self._fresh_until = keys, now, now + interval
        log.info("key set fetched url=%s keys=%d refresh_in=%s", self.url, len(keys), interval)

    async def _fetch(self) -> tuple[KeySet, dt.timedelta]:
        what = f"{self._method}: key set"
        resp = await request(
            "GET", self.url, what=what, headers={"Accept": "application/json"},
            max_bytes=MAX_JWKS_BYTES,
        )  # fmt: skip
        if resp.status != 200:
            raise Unavailable(f"{what}: {self.url} answered HTTP {resp.status}: {resp.excerpt()}")
        keys = parse_key_set(resp.body, method=self._method)
        return keys, refresh_interval(resp.headers.get("cache-control"))


class FileKeySource(KeySource):
    """A JWKS file, checked at start and read again when it changes."""

    def __init__(self, path: Path, *, method: str, where: str) -> None:
        self.path = path
        self._method = method
        self._mtime: int | None = None
        self._keys = KeySet()
        try:
            self._reload()
        except AttestationFailed as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def __repr__(self) -> str:
        return f"FileKeySource({str(self.path)!r})"

    def _reload(self) -> KeySet:
        try:
            mtime = self.path.stat().st_mtime_ns
            if mtime != self._mtime:
                with self.path.open("rb") as fh:
                    data = fh.read(MAX_JWKS_BYTES + 1)
                self._keys = parse_key_set(data, method=self._method)
                self._mtime = mtime
        except OSError as exc:
            raise AttestationFailed(
                f"{self._method}: cannot read key set file {str(self.path)!r}: {exc.strerror}"
            ) from None
        return self._keys

    async def get(self, kid: str | None = None) -> KeySet:
        return await asyncio.to_thread(self._reload)


def key_source_setting(
    s: Block, base_dir: Path | None, default_url: str
) -> tuple[str | None, Path | None]:
    """The ``jwks_url`` or ``jwks_file`` key of a server config, not both; ``default_url``
    (the provider's) when neither is given. Relative files resolve from ``base_dir``."""
    if s.has("jwks_url") and s.has("jwks_file"):
        raise ConfigError(f"{s.path}: give jwks_url or jwks_file, not both")
    value = s.optional_string("jwks_file")
    if value is not None:
        path = Path(value)
        return None, base_dir / path if base_dir is not None and not path.is_absolute() else path
    return check_secure_url(s.string("jwks_url", default_url), s.where("jwks_url")), None


def open_key_source(
    url: str | None, file: Path | None, *, method: str, clock: Clock, where: str
) -> KeySource:
    if file is not None:
        return FileKeySource(file, method=method, where=where)
    assert url is not None
    return UrlKeySource(url, method=method, clock=clock)
