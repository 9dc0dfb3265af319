"""An ordinary Kubernetes API client (REST + informer), what node, network and controllers use.

Imports no other layer: it speaks HTTP to whatever API server it is pointed at.
"""
