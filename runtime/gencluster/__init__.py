"""gencluster: highly available, stateful Python servers on Kubernetes."""

import os

# Before gRPC is first imported: its fork handlers off. The runtime forks only to encode a
# snapshot in a child that never touches gRPC and `_exit`s (`state_encoding`); gRPC's handlers
# would run in that child anyway and can abort it (SIGABRT, SIGSEGV were seen with many gRPC
# threads busy; grpc/grpc#41455 disabled them by default for the same reason). An explicit
# setting in the environment wins.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

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
