"""The control plane: use cases (service), the HTTP API, auth and the change feed."""
