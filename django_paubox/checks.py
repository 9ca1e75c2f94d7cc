"""Django system checks for the PAUBOX settings."""
