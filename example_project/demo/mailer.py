"""The default mailer, as each Django version gives it: ``mailers.default`` on 6.1+ (where
``get_connection()`` is deprecated), ``get_connection()`` before."""

import django
from django.core import mail


def default_mailer():
    if django.VERSION >= (6, 1):
        return mail.mailers.default
    return mail.get_connection()
