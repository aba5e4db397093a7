"""The TCTI string: which TPM to talk to.

Accepted forms (strict; anything else is a ConfigError naming the value):
  ``device:/dev/tpmrm0``                  kernel TPM device (default; tpmrm = resource manager)
  ``swtpm:path=/run/swtpm.sock``          swtpm on a unix socket
  ``swtpm:host=127.0.0.1,port=2321``      swtpm on TCP
  ``tabrmd`` / ``tabrmd:bus_name=com.intel.tss2.Tabrmd,bus_type=system``
                                          the tpm2-abrmd resource manager over D-Bus
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from pathlib import Path

from plastron.errors import ConfigError

DEFAULT_TCTI = "device:/dev/tpmrm0"
MAX_TCTI_LENGTH = 1024
_HOST_CHARS = frozenset(string.ascii_letters + string.digits + ".-:[]")
_BUS_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "._-")


@dataclass(frozen=True)
class Tcti:
    """A parsed TCTI: ``name`` is the libtss2 TCTI module, ``conf`` its configuration string."""

    name: str
    conf: str

    @classmethod
    def parse(cls, text: str) -> Tcti:
        if not text or len(text) > MAX_TCTI_LENGTH:
            raise ConfigError(f"tcti: must be 1..{MAX_TCTI_LENGTH} characters (got {len(text)})")
        if any(ch in text for ch in "\0\n\r"):
            raise ConfigError(f"tcti: control characters are not allowed ({text!r})")
        name, sep, conf = text.partition(":")
        if name == "tabrmd":
            return cls("tabrmd", _check_tabrmd_conf(conf, text))
        if not sep:
            raise ConfigError(f"tcti: expected '<device|swtpm>:<config>' ({text!r})")
        if name == "device":
            if not conf.startswith("/"):
                raise ConfigError(f"tcti: device path must be absolute ({text!r})")
            return cls("device", conf)
        if name == "swtpm":
            return cls("swtpm", _check_swtpm_conf(conf, text))
        raise ConfigError(
            f"tcti: unknown TCTI {name!r}; expected 'device', 'swtpm' or 'tabrmd' ({text!r})"
        )

    def __str__(self) -> str:
        return f"{self.name}:{self.conf}" if self.conf else self.name

    @property
    def resource_managed(self) -> bool:
        """Whether several clients (and processes) can share this TPM at once: the kernel's
        ``/dev/tpmrm*`` or tpm2-abrmd. Raw ``/dev/tpm0`` and swtpm serve one client at a time
        and hold only three transient objects."""
        if self.name == "tabrmd":
            return True
        return self.name == "device" and Path(self.conf).name.startswith("tpmrm")


def _check_swtpm_conf(conf: str, whole: str) -> str:
    fields: dict[str, str] = {}
    for part in conf.split(","):
        key, sep, value = part.partition("=")
        if not sep or not value:
            raise ConfigError(f"tcti: swtpm option {part!r} is not key=value ({whole!r})")
        if key in fields:
            raise ConfigError(f"tcti: swtpm option {key!r} given twice ({whole!r})")
        fields[key] = value
    if set(fields) == {"path"}:
        if not fields["path"].startswith("/"):
            raise ConfigError(f"tcti: swtpm socket path must be absolute ({whole!r})")
        return conf
    if set(fields) in ({"host", "port"}, {"host"}, {"port"}):
        host = fields.get("host", "127.0.0.1")
        if any(ch not in _HOST_CHARS for ch in host):
            raise ConfigError(f"tcti: swtpm host {host!r} is not a host name or address")
        port = fields.get("port", "2321")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"tcti: swtpm port {port!r} is not in 1..65535")
        return conf
    raise ConfigError(f"tcti: swtpm takes either path=… or host=…,port=… ({whole!r})")


def _check_tabrmd_conf(conf: str, whole: str) -> str:
    if not conf:
        return ""
    fields: dict[str, str] = {}
    for part in conf.split(","):
        key, sep, value = part.partition("=")
        if not sep or not value or key in fields:
            raise ConfigError(f"tcti: tabrmd option {part!r} is not a single key=value ({whole!r})")
        fields[key] = value
    unknown = set(fields) - {"bus_name", "bus_type"}
    if unknown:
        extra = ", ".join(sorted(unknown))
        raise ConfigError(f"tcti: tabrmd takes bus_name and bus_type, not {extra} ({whole!r})")
    if fields.get("bus_type", "system") not in ("system", "session"):
        raise ConfigError(f"tcti: tabrmd bus_type must be 'system' or 'session' ({whole!r})")
    if any(ch not in _BUS_NAME_CHARS for ch in fields.get("bus_name", "x")):
        raise ConfigError(f"tcti: tabrmd bus_name {fields['bus_name']!r} is not a D-Bus name")
    return conf
