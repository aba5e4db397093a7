"""The one logged-in PKCS#11 session per token, the process-wide lock, and reconnection.

python-pkcs11 calls ``C_Initialize(NULL)`` and releases the GIL around every C_* call, so a
module such as SoftHSM2 runs with its own mutexes disabled: two threads in the module at once
corrupt it. Every PKCS#11 call in the process therefore runs under :data:`PKCS11_LOCK`.

``C_Logout`` (done by ``Session.close``) logs out every session of the application on that
token, so one logged-in anchor session per (module, token) is opened, shared and kept for the
life of the process. When the token or module goes away (session or object handles invalid,
device removed, module finalised), :meth:`TokenSession.run` re-initialises the module, logs in
again and retries the operation once; if that fails too it raises KeyManagerUnavailable. It
never falls back to anything that is not the token.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pkcs11
from pkcs11 import exceptions as p11e

from plastron.errors import ConfigError, KeyManagerError, KeyManagerUnavailable
from plastron.hsm.config import Pkcs11Config

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Serialises every PKCS#11 call in the process (see module docstring).
PKCS11_LOCK = threading.RLock()

#: Errors that mean "the session, the login or the device is gone": reconnect and retry once.
RECONNECT_ERRORS: tuple[type[Exception], ...] = (
    p11e.SessionHandleInvalid,
    p11e.SessionClosed,
    p11e.DeviceRemoved,
    p11e.DeviceError,
    p11e.TokenNotPresent,
    p11e.TokenNotRecognised,
    p11e.ObjectHandleInvalid,
    p11e.KeyHandleInvalid,
    p11e.UserNotLoggedIn,
    p11e.GeneralError,
    p11e.NoSuchToken,
)


#: A first open that fails with these is tried again, ``OPEN_ATTEMPTS`` times in all, after a
#: growing, jittered pause: SoftHSM2's file store rewrites a token's ``token.object`` at every
#: login, and another process reading it at that moment finds no token (NoSuchToken), a token
#: without a user PIN (UserPinNotInitialized) or fails (GeneralError). The server's signing
#: workers log in to the CA's token together, so without this one of them would sit out its
#: reopen backoff. A wrong PIN is never retried.
BUSY_TOKEN_ERRORS: tuple[type[p11e.PKCS11Error], ...] = (
    p11e.GeneralError,
    p11e.NoSuchToken,
    p11e.UserPinNotInitialized,
)
OPEN_ATTEMPTS = 10
OPEN_RETRY_DELAY = 0.02


def is_reconnect_error(exc: BaseException) -> bool:
    # python-pkcs11 raises the bare base class for codes it has no class for, notably
    # CKR_CRYPTOKI_NOT_INITIALIZED after someone finalised the module.
    return isinstance(exc, RECONNECT_ERRORS) or type(exc) is p11e.PKCS11Error


@dataclass
class _Module:
    lib: Any
    generation: int = 0


_MODULES: dict[str, _Module] = {}
_SHARED: dict[tuple[str, str], TokenSession] = {}


def _load_module(path: str) -> _Module:
    """Load (or re-initialise) the module at ``path``; the caller holds the lock."""
    module = _MODULES.get(path)
    if module is not None:
        if not module.lib.initialized:
            module.lib.initialize()
            module.generation += 1
        return module
    if not os.path.isfile(path):
        raise ConfigError(f"pkcs11: module_path {path!r} does not exist or is not a file")
    try:
        lib = pkcs11.lib(path)
    except p11e.PKCS11Error as exc:
        if "loading" in str(exc):
            raise ConfigError(f"pkcs11: module_path {path!r} is not a PKCS#11 module") from None
        raise
    module = _Module(lib=lib)
    _MODULES[path] = module
    return module


class TokenSession:
    """The shared logged-in session for one token. Use :func:`open_token_session`."""

    def __init__(self, config: Pkcs11Config) -> None:
        self._config = config
        self._session: Any = None
        self._module_generation = -1
        self._generation = 0
        self._refs = 0
        self._refused_pin: bytes | None = None

    def __repr__(self) -> str:
        return f"TokenSession({self._config.module_path!r}, {self._config.describe_token()})"

    @property
    def config(self) -> Pkcs11Config:
        return self._config

    @property
    def generation(self) -> int:
        """Bumped every time a new session is opened; object handles from older ones are dead."""
        return self._generation

    def _find_token(self, lib: Any) -> Any:
        cfg = self._config
        if cfg.token_label is not None:
            return lib.get_token(token_label=cfg.token_label)
        if cfg.token_serial is not None:
            return lib.get_token(token_serial=cfg.token_serial.encode())
        for slot in lib.get_slots(token_present=True):
            if slot.slot_id == cfg.slot_id:
                return slot.get_token()
        raise p11e.NoSuchToken(f"no token in slot {cfg.slot_id}")

    def _login(self, token: Any) -> Any:
        pin = self._config.read_pin()
        digest = hashlib.sha256(pin).digest()
        # a PIN the token refused is not tried again until its source changes: retrying it on
        # every request would lock the token's user PIN
        if self._refused_pin is not None and hmac.compare_digest(digest, self._refused_pin):
            raise KeyManagerError(
                f"pkcs11: the PIN from {self._config.describe_pin_source()} was refused by"
                f" {self._config.describe_token()}; not retrying until it changes"
            )
        try:
            text = pin.decode("utf-8")
        except UnicodeDecodeError:
            raise KeyManagerError("pkcs11: the PIN is not valid UTF-8") from None
        try:
            return token.open(rw=True, user_pin=text)
        except p11e.UserAlreadyLoggedIn:
            # another session of this process is logged in to the token; ours inherits it
            return token.open(rw=True)
        except (p11e.PinIncorrect, p11e.PinInvalid, p11e.PinLenRange) as exc:
            self._refused_pin = digest
            raise KeyManagerError(
                f"pkcs11: login to {self._config.describe_token()} failed: wrong PIN"
                f" (from {self._config.describe_pin_source()}; {type(exc).__name__})"
            ) from None
        except p11e.PinLocked:
            raise KeyManagerError(
                f"pkcs11: the user PIN of {self._config.describe_token()} is locked"
            ) from None

    def _open(self) -> None:
        """Open and log in the anchor session; the caller holds the lock."""
        module = _load_module(self._config.module_path)
        # Noted before trying: after a failed open (the token gone) the next reconnect must
        # re-initialise the module again, since modules such as SoftHSM2 list tokens only at
        # C_Initialize. Noted after success only, a session whose opens kept failing would take
        # every later re-initialisation for someone else's and never see the token return.
        self._module_generation = module.generation
        token = self._find_token(module.lib)
        self._session = self._login(token)
        self._generation += 1
        self._refused_pin = None

    def _reinitialize_module(self) -> None:
        """C_Finalize + C_Initialize, unless another session already did since we opened."""
        module = _MODULES.get(self._config.module_path)
        if module is not None and module.generation == self._module_generation:
            # finalize fails if it was finalised elsewhere: initialising again is what we need
            with contextlib.suppress(p11e.PKCS11Error):
                module.lib.finalize()
            module.lib.initialize()
            module.generation += 1

    def _reconnect(self) -> None:
        """Re-initialise the module and log in again."""
        self._session = None  # dead handle: closing it would only fail
        self._reinitialize_module()
        self._open()

    def _ensure(self) -> Any:
        module = _MODULES.get(self._config.module_path)
        stale = (
            module is None
            or not module.lib.initialized
            or module.generation != self._module_generation
        )
        if self._session is None or stale:
            self._session = None
            if module is not None and not module.lib.initialized:
                module.lib.initialize()
                module.generation += 1
            self._open()
        return self._session

    def open_checked(self) -> None:
        """First connection at start-up: every failure is one clear ConfigError.

        A busy token is tried again a few times first (see :data:`OPEN_ATTEMPTS`)."""
        for attempt in range(1, OPEN_ATTEMPTS + 1):
            with PKCS11_LOCK:
                try:
                    self._open_fresh(reinitialize=attempt > 1)
                    return
                except BUSY_TOKEN_ERRORS as exc:
                    if attempt == OPEN_ATTEMPTS:
                        raise self._open_failure(exc) from None
                except KeyManagerError as exc:
                    raise ConfigError(str(exc)) from None
                except p11e.PKCS11Error as exc:
                    raise self._open_failure(exc) from None
            time.sleep(random.uniform(0.5, 1.5) * OPEN_RETRY_DELAY * attempt)  # noqa: S311 (jitter)

    def _open_fresh(self, *, reinitialize: bool) -> None:
        """Open; on a retry, re-initialise the module first: modules such as SoftHSM2 enumerate
        tokens at C_Initialize, so a token created (or being rewritten by another process) when
        the module was loaded shows up only after initialising again."""
        module = _MODULES.get(self._config.module_path)
        if reinitialize and module is not None:
            self._module_generation = module.generation
            self._reinitialize_module()
        self._ensure()

    def _open_failure(self, exc: p11e.PKCS11Error) -> ConfigError:
        if isinstance(exc, p11e.NoSuchToken):
            return ConfigError(
                f"pkcs11: no token with {self._config.describe_token()} in module"
                f" {self._config.module_path!r}"
            )
        return ConfigError(
            f"pkcs11: cannot open {self._config.describe_token()} in module"
            f" {self._config.module_path!r} ({type(exc).__name__})"
        )

    def run(self, what: str, op: Callable[[Any], T]) -> T:
        """Run ``op(session)`` under the process lock; reconnect and retry once if the token
        went away. Raises KeyManagerUnavailable when it is still unreachable."""
        with PKCS11_LOCK:
            try:
                return op(self._ensure())
            except p11e.PKCS11Error as exc:
                if not is_reconnect_error(exc):
                    raise KeyManagerError(f"pkcs11: {what} failed ({type(exc).__name__})") from None
                first = type(exc).__name__
            log.warning("pkcs11 reconnect token=%s cause=%s", self._config.describe_token(), first)
            try:
                self._reconnect()
                return op(self._session)
            except p11e.PKCS11Error as exc:
                self._session = None
                if is_reconnect_error(exc):
                    raise KeyManagerUnavailable(
                        f"pkcs11: {self._config.describe_token()} in module"
                        f" {self._config.module_path!r} is unreachable during {what}"
                        f" ({first}, then {type(exc).__name__})"
                    ) from None
                raise KeyManagerError(f"pkcs11: {what} failed ({type(exc).__name__})") from None

    def check_token(self, session: Any) -> None:
        """Inside :meth:`run`: raise a reconnect error unless the token is present now."""
        module = _MODULES[self._config.module_path]
        present = {s.slot_id for s in module.lib.get_slots(token_present=True)}
        if session.token.slot.slot_id not in present:
            raise p11e.TokenNotPresent()

    def probe(self) -> None:
        """Raise KeyManagerUnavailable unless the token answers now."""

        def check(session: Any) -> None:
            self.check_token(session)
            session.generate_random(64)

        self.run("health check", check)

    def close(self) -> None:
        """Drop one reference; the last one logs out and closes the session."""
        with PKCS11_LOCK:
            self._refs -= 1
            if self._refs > 0:
                return
            _SHARED.pop(_share_key(self._config), None)
            session, self._session = self._session, None
            if session is not None:
                # if the token is gone already there is nothing left to log out of
                with contextlib.suppress(p11e.PKCS11Error):
                    session.close()


def _share_key(config: Pkcs11Config) -> tuple[str, str]:
    return config.module_path, config.describe_token()


def open_token_session(config: Pkcs11Config) -> TokenSession:
    """The shared session for ``config``'s token, logged in now; ConfigError if it cannot be."""
    with PKCS11_LOCK:
        session = _SHARED.get(_share_key(config))
        if session is None:
            session = TokenSession(config)
            session.open_checked()
            _SHARED[_share_key(config)] = session
        session._refs += 1
        return session
