"""The article's id_server: hands out 1, 2, 3, ... across failovers."""

from gencluster_examples.id_server.id_server import IdServer

__all__ = ["IdServer"]
