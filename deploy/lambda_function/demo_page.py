"""The demo page: one self-contained HTML file, served by the local endpoint and by the Lambda on GET.

Standard library only, like the rest of this folder (it ships in the Lambda zip). The page's
script and style are inline, and the Content-Security-Policy admits exactly those two blocks by
their SHA-256, nothing else: no other script, no inline event handlers, no plugins, no framing,
and requests only to the page's own origin. The page writes model output with `textContent`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

PAGE_FILE = Path(__file__).with_name("demo.html")


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def render(endpoint: str) -> str:
    """The page, posting its requests to `endpoint` (relative to the page: "invocations", or "" for itself)."""
    page = PAGE_FILE.read_text(encoding="utf-8")
    if not re.fullmatch(r"[A-Za-z0-9/_.-]*", endpoint):
        raise ValueError(f"endpoint must be a plain relative path, got {endpoint!r}")
    return page.replace('<body data-endpoint="">', f'<body data-endpoint="{endpoint}">', 1)


def security_policy(page: str) -> str:
    """A CSP that allows the page's own inline script and style, by hash, and nothing else."""
    scripts = [_digest(block) for block in re.findall(r"<script>(.*?)</script>", page, re.DOTALL)]
    styles = [_digest(block) for block in re.findall(r"<style>(.*?)</style>", page, re.DOTALL)]
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src {' '.join(scripts)}",
            f"style-src {' '.join(styles)}",
            "img-src blob:",  # the preview of the chosen photo
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def headers(page: str) -> dict[str, str]:
    """Response headers for the page."""
    return {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": security_policy(page),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def requested(event: Any) -> bool:
    """Whether a function-URL (or API Gateway) event is a browser's GET."""
    if not isinstance(event, dict):
        return False
    http = event.get("requestContext", {}).get("http", {}) if isinstance(event.get("requestContext"), dict) else {}
    method = http.get("method") if isinstance(http, dict) else None
    return (method or event.get("httpMethod")) == "GET"


def lambda_response(event: dict[str, Any]) -> dict[str, Any]:
    """The page at the function URL's root, which posts back to the function; 404 elsewhere."""
    path = event.get("rawPath") or event.get("path") or "/"
    if path != "/":
        return {"statusCode": 404, "headers": {"Content-Type": "text/plain"}, "body": "not found"}
    page = render("")
    return {"statusCode": 200, "headers": headers(page), "body": page}
