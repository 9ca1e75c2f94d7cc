"""What became of each message: statuses, parsing receipts and webhook events, polling,
the webhook view and retention. Rows are written only through :mod:`django_paubox.records`."""
