"""The article's highly available chat server, with room messages as subscriptions."""

from gencluster_examples.chat.chat import ChatServer

__all__ = ["ChatServer"]
