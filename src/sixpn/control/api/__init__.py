"""The HTTP API: FastAPI routers that translate requests into use cases and back.

No decision is made here beyond "who may call this"; one table maps the error tree to statuses.
"""

from sixpn.control.api.app import create_app

__all__ = ["create_app"]
