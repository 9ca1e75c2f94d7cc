"""HIPAA-compliant email for Django through the Paubox Email API."""

__version__ = "0.1.0"
