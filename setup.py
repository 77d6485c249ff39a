"""Only the C extension lives here; everything else about the package is in pyproject.toml.

``sixpn.dns._fastpath`` is the DNS server's UDP loop for cached answers (see its header). It is
optional: without a compiler the install still succeeds and the server uses the Python loop.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "sixpn.dns._fastpath",
            sources=["src/sixpn/dns/_fastpath.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
