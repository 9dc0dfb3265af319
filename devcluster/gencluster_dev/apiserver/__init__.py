"""The API server: Kubernetes REST over aiohttp (`server`), on the verbs' semantics
(`operations`), with authentication, watch streams, persistence and garbage collection.

Uses machinery only. The garbage collector lives here rather than in `controllers` because it
runs inside the server over `Operations` (not over HTTP), as part of every delete.
"""
