"""pyserini_kdspd: KD-SPD multilingual dense retrieval (Huang et al., SIGIR 2023) as a Pyserini plugin.

Importing the package (or starting Python in an environment where it is installed)
makes Pyserini 1.6.0 work without setup: a suitable Java is found and started,
and the ``kdspd`` encoders are registered with ``pyserini.encode`` and
``pyserini.search.faiss``.
"""
__version__ = "0.1.0"

from . import _startup  # noqa: F401,E402  (installs the Pyserini import hook)
