#!/usr/bin/env python
"""Run the example project from anywhere: `python example_project/manage.py runserver`."""

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    # The repository root, not this folder: example_project/celery.py must not shadow celery.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
