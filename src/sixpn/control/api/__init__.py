"""The HTTP API: FastAPI routers that translate requests into use cases and back.

No decision is made here beyond "who may call this"; one table maps the error tree to statuses.
The application is built by ``sixpn.control.api.app.create_app``; this package's ``__init__``
imports nothing, so that the client can use ``schemas`` without loading FastAPI's app machinery.
"""
