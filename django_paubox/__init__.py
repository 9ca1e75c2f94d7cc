"""HIPAA-compliant email for Django through the Paubox Email API."""

from ._moved import install as _install_moved_paths

__version__ = "0.2.0"

_install_moved_paths()
