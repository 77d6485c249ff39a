"""Settings and wiring: the one place where adapters are chosen and processes are assembled."""
