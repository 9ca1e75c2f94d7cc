"""From an ``EmailMessage`` to Paubox: payloads (pure), the dispatch engine, scheduled sends and
dynamic templates. The backends and the Celery tasks sit on top; see docs/design.md."""
