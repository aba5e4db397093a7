"""The ``aws_iid`` attestation method (SPIRE's formats): an EC2 instance proves itself with the
instance identity document its metadata service serves, signed by AWS.

- :mod:`.verify`: :func:`verify`, the offline check of a document and its signatures with an
  explicit clock (also for checking a document by hand);
- :mod:`.cms`: CMS SignedData (``rsa2048``, ``pkcs7``) with asn1crypto;
- :mod:`.certificates`: AWS's published certificates (package data) plus configured extras;
- :mod:`.document`: the document's JSON and claims.
"""

from plastron.attestors.aws_iid.certificates import AwsCertificates
from plastron.attestors.aws_iid.document import NAME, IdentityDocument
from plastron.attestors.aws_iid.verify import DEFAULT_LEEWAY, MAX_LEEWAY, verify

__all__ = ["DEFAULT_LEEWAY", "MAX_LEEWAY", "NAME", "AwsCertificates", "IdentityDocument", "verify"]
