"""The `sixpn` command: one module per noun, all speaking to the API through ``sixpn.client``."""
