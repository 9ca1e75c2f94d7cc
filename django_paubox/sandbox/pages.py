"""The sandbox's own HTML: a list of captured messages, a detail view, and the gateway 404.

A local developer tool, so it shows message content; every value is escaped, and the HTML part
is shown as source text, never rendered. No external CSS or JS.
"""

from __future__ import annotations

import html
import re
from urllib.parse import quote

from .state import TrackedMessage
from .validation import decode_base64

GATEWAY_404 = (
    "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n"
    "<center><h1>404 Not Found</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#222}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.3rem .5rem;
border-bottom:1px solid #ddd;vertical-align:top}th{background:#f4f4f4}
code,pre{font:12px/1.4 ui-monospace,monospace}pre{background:#f7f7f7;padding:.75rem;
white-space:pre-wrap;word-break:break-word;border:1px solid #e4e4e4}
.muted{color:#777}a{color:#0b5cad}
"""


def _e(value: object) -> str:
    """``value`` as HTML-escaped text; a lone surrogate (valid in JSON, not in UTF-8) is
    shown as U+FFFD, so one odd subject cannot turn the page into a 500."""
    return html.escape(_LONE_SURROGATE.sub("\ufffd", str(value)), quote=True)


def _page(title: str, body: str, *, refresh: bool = False) -> str:
    meta = '<meta http-equiv="refresh" content="5">' if refresh else ""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _addresses(values: object) -> str:
    if not isinstance(values, list):
        return ""
    return ", ".join(str(v) for v in values)


def render_index(tracked: list[TrackedMessage], now: float, api_url: str) -> str:
    """Captured messages, newest first (refreshes itself every 5 s)."""
    rows = []
    for item in reversed(tracked):
        c = item.captured
        link = "/message/" + quote(c.tracking_id)
        rows.append(
            "<tr>"
            f"<td>{_e(c.received_at.strftime('%Y-%m-%d %H:%M:%S'))}</td>"
            f'<td><a href="{_e(link)}"><code>{_e(c.tracking_id)}</code></a></td>'
            f"<td>{_e(c.sender)}</td>"
            f"<td>{_e(', '.join(c.recipients))}</td>"
            f"<td>{_e(c.subject)}</td>"
            f"<td>{_e(item.summary(now))}</td>"
            "</tr>"
        )
    table = (
        "<table><thead><tr><th>Received (UTC)</th><th>Tracking id</th><th>From</th><th>To</th>"
        "<th>Subject</th><th>Status</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        if rows
        else '<p class="muted">No messages yet.</p>'
    )
    body = (
        "<h1>Paubox sandbox</h1>"
        f'<p class="muted">API_URL <code>{_e(api_url)}</code> &middot; '
        f"{len(tracked)} message(s) captured &middot; nothing here leaves this machine.</p>" + table
    )
    return _page("Paubox sandbox", body, refresh=True)


def decoded_html(value: str) -> str:
    """The HTML part as a person would read it: base64 decoded, HTML-escaped text unescaped."""
    raw = decode_base64(value) if value.strip() else None
    if raw is not None:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = ""
        if "<" in text:
            return text
    if "<" not in value and "&lt;" in value:
        return html.unescape(value)
    return value


def render_detail(item: TrackedMessage, now: float) -> str:
    """One message: headers, each recipient's status, text and decoded HTML, attachments."""
    c = item.captured
    message = c.message
    header_rows = "".join(
        f"<tr><th>{_e(name)}</th><td>{_e(value)}</td></tr>" for name, value in c.headers.items()
    )
    for key in ("recipients", "cc", "bcc"):
        if message.get(key):
            header_rows += f"<tr><th>{_e(key)}</th><td>{_e(_addresses(message.get(key)))}</td></tr>"
    for key in ("allowNonTLS", "forceSecureNotification"):
        if key in message:
            header_rows += f"<tr><th>{_e(key)}</th><td>{_e(message[key])}</td></tr>"
    for key, value in c.options.items():
        header_rows += f"<tr><th>{_e(key)}</th><td>{_e(value)}</td></tr>"
    delivery_rows = "".join(
        f"<tr><td>{_e(d.recipient)}</td><td>{_e(d.outcome)}</td>"
        f"<td>{_e(item.status_of(d, now)[0])}</td></tr>"
        for d in item.deliveries
    )
    content = c.content
    parts = []
    if isinstance(content.get("text/plain"), str):
        parts.append(f"<h2>text/plain</h2><pre>{_e(content['text/plain'])}</pre>")
    if isinstance(content.get("text/html"), str):
        parts.append(
            "<h2>text/html (decoded source)</h2>"
            f"<pre>{_e(decoded_html(content['text/html']))}</pre>"
        )
    attachments = message.get("attachments") or []
    if isinstance(attachments, list) and attachments:
        items = "".join(
            f"<li>{_e(a.get('fileName'))} <span class=muted>({_e(a.get('contentType'))}, "
            f"{len(decode_base64(str(a.get('content') or '')) or b'')} bytes)</span></li>"
            for a in attachments
            if isinstance(a, dict)
        )
        parts.append(f"<h2>Attachments</h2><ul>{items}</ul>")
    body = (
        '<p><a href="/">&larr; all messages</a></p>'
        f"<h1>{_e(c.subject) or '(no subject)'}</h1>"
        f'<p class="muted">Tracking id <code>{_e(c.tracking_id)}</code> &middot; '
        f"{_e(c.endpoint)} &middot; received {_e(c.received_at.isoformat())} &middot; "
        f"message id <code>{_e(c.message_id)}</code></p>"
        f"<h2>Headers</h2><table>{header_rows}</table>"
        "<h2>Deliveries</h2><table><thead><tr><th>Recipient</th><th>Simulated outcome</th>"
        f"<th>deliveryStatus now</th></tr></thead><tbody>{delivery_rows}</tbody></table>"
        + "".join(parts)
    )
    return _page(f"Paubox sandbox: {c.tracking_id}", body)
