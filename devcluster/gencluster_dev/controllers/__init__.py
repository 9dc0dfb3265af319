"""Controllers beside the control plane: the Deployment, Endpoints and volume controllers,
and operators run as supervised local processes.

Uses machinery and client only: a controller here is an API client like any other.
"""
