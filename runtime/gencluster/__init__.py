"""gencluster: highly available, stateful Python servers on Kubernetes."""

from gencluster.codec import CodecError
from gencluster.server import (
    Context,
    GenServer,
    MergeNotSupported,
    ServerLoadError,
    UnknownRequest,
    load_server_class,
)

__all__ = [
    "CodecError",
    "Context",
    "GenServer",
    "MergeNotSupported",
    "ServerLoadError",
    "UnknownRequest",
    "load_server_class",
]
