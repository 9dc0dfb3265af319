"""gencluster: highly available, stateful Python servers on Kubernetes."""

from gencluster.client import (
    AsyncClient,
    CallDetails,
    Client,
    ClientTls,
    ClusterUnavailable,
    RemoteError,
    RequestIdReusedError,
    RetryWindowExpired,
)
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
    "CallDetails",
    "Client",
    "ClientTls",
    "ClusterUnavailable",
    "CodecError",
    "Context",
    "GenServer",
    "MergeNotSupported",
    "RemoteError",
    "RequestIdReusedError",
    "RetryWindowExpired",
    "ServerLoadError",
    "UnknownRequest",
    "load_server_class",
]
