"""Settings and wiring: the one place where adapters are chosen and processes are assembled.

The defaults the CLI shows live here, not in the modules that use them: ``sixpn --help`` must
not load uvicorn and FastAPI.
"""

# Agents and DNS servers each hold one change stream open: a fleet of N hosts needs ~N (and 2N
# with standalone DNS servers), plus CLIs. Raise it with --max-connections for bigger fleets.
DEFAULT_MAX_CONNECTIONS = 4096
