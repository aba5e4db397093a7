"""Plastron's exception hierarchy.

Every error Plastron raises on purpose derives from :class:`PlastronError`. Messages name
the offending value and the rule it broke, e.g.
``x509pop: certificate chain does not lead to a trusted CA (subject="CN=node-7")``.

PlastronError
├── InvalidArgument            bad input from a caller (gRPC INVALID_ARGUMENT, CLI exit 1)
│   ├── InvalidSpiffeId        not a canonical SPIFFE ID / trust domain
│   ├── InvalidSelector        not "type:value"
│   ├── InvalidSvid            an X509-SVID or JWT-SVID that fails the spec or validation
│   ├── InvalidBundle          a SPIFFE bundle that cannot be parsed or is malformed
│   └── ConfigError            configuration that cannot be used (names the key)
├── NotFound                   the named object does not exist (gRPC NOT_FOUND)
├── AlreadyExists              the object exists already (gRPC ALREADY_EXISTS)
├── NotAuthorized              the caller may not do this (gRPC PERMISSION_DENIED)
├── AttestationFailed          node or workload attestation refused (gRPC PERMISSION_DENIED)
├── FailedPrecondition         state forbids this (gRPC FAILED_PRECONDITION)
├── Unavailable                a dependency is down; retrying later may work (gRPC UNAVAILABLE)
│   └── KeyManagerUnavailable  the key store (HSM, TPM, disk) cannot be reached
├── KeyManagerError            a key operation failed for a reason other than reachability
└── DataStoreError             the datastore failed (gRPC INTERNAL)
"""

from __future__ import annotations


class PlastronError(Exception):
    """Base of every error Plastron raises on purpose."""


class InvalidArgument(PlastronError):
    """A caller supplied malformed or out-of-range input."""


class InvalidSpiffeId(InvalidArgument):
    """A string is not a canonical SPIFFE ID or trust domain name."""


class InvalidSelector(InvalidArgument):
    """A selector is not of the form ``type:value``."""


class InvalidSvid(InvalidArgument):
    """An SVID fails the SPIFFE spec or its validation."""


class InvalidBundle(InvalidArgument):
    """A SPIFFE trust bundle cannot be parsed or is malformed."""


class ConfigError(InvalidArgument):
    """Configuration that cannot be used; the message names the key."""


class NotFound(PlastronError):
    """The named object does not exist."""


class AlreadyExists(PlastronError):
    """The object already exists."""


class NotAuthorized(PlastronError):
    """The caller is not allowed to perform the operation."""


class AttestationFailed(PlastronError):
    """Node or workload attestation was refused."""


class FailedPrecondition(PlastronError):
    """The system is not in a state that allows the operation."""


class Unavailable(PlastronError):
    """A dependency is unavailable; the caller may retry later."""


class KeyManagerUnavailable(Unavailable):
    """The key store (HSM, TPM, disk) cannot be reached."""


class KeyManagerError(PlastronError):
    """A key operation failed for a reason other than reachability."""


class DataStoreError(PlastronError):
    """The datastore failed."""
