"""gencluster: highly available, stateful Python servers on Kubernetes."""

from gencluster.client import AsyncClient, Client, ClusterUnavailable, RemoteError
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
    "AsyncClient",
    "Client",
    "ClusterUnavailable",
    "CodecError",
    "Context",
    "GenServer",
    "MergeNotSupported",
    "RemoteError",
    "ServerLoadError",
    "UnknownRequest",
    "load_server_class",
]
