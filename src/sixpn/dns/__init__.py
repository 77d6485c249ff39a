"""The `.internal` DNS server: zone state fed by the change stream, UDP/TCP serving, forwarding."""
