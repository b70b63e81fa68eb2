"""Talking to Firecracker: its API spec (1.16.1), request validation, and a typed async client.

Public surface (locked by tests/firecracker/test_client.py):

* :class:`FirecrackerClient` - one per API socket; ``request()`` for raw calls,
  one typed method per spec operation, ``wait_ready()``.
* :class:`FirecrackerResponse` - a raw answer (status, headers, bytes).
* :func:`validate_body`, :func:`match_operation`, :func:`operations`,
  :data:`SPEC`, :data:`SPEC_VERSION` - the spec and checks against it.
"""

from fc_macos.firecracker.client import FirecrackerClient
from fc_macos.firecracker.models import FirecrackerResponse
from fc_macos.firecracker.spec import SPEC, SPEC_VERSION, Match, Operation, match_operation, operations, validate_body
from fc_macos.firecracker.transport import DEFAULT_TIMEOUT, error_from_response

__all__ = [
    "DEFAULT_TIMEOUT",
    "SPEC",
    "SPEC_VERSION",
    "FirecrackerClient",
    "FirecrackerResponse",
    "Match",
    "Operation",
    "error_from_response",
    "match_operation",
    "operations",
    "validate_body",
]
