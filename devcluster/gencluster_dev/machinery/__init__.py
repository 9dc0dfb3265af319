"""API machinery: the Kubernetes API's rules as pure functions and data.

No sockets, no processes, no clock read directly (time comes in as arguments), and no import
from any other layer, so every rule here is tested in milliseconds and shared by the API server
(which enforces them) and the node, network and controllers (which read objects the same way).
"""
