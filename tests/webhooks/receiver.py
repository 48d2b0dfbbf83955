"""A webhook receiver that shares no code with Godel: the standard library only (http.server, hmac).

    python receiver.py --port 0 --secrets secrets.json --log log.jsonl --ready port.txt

Each POST to ``/hook/NAME`` is verified against the secret named NAME in the secrets file (a JSON object, read
again on every request, so a test can add secrets while the receiver runs): the ``Godel-Signature`` header
``t=<unix seconds>,v1=<hex>`` must be the HMAC-SHA256 of ``"{t}.{body}"`` and ``t`` within five minutes of now.
Accepted: 200; rejected: 401. Either way one JSON line is appended to the log. The port it listens on is written
to the ready file once it accepts connections.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

TOLERANCE = 300


def check_signature(secret: str, header: str, body: bytes) -> str | None:
    """Why the signature is not valid, or None."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    if "t" not in parts or "v1" not in parts:
        return "malformed signature header"
    try:
        timestamp = int(parts["t"])
    except ValueError:
        return "timestamp is not a number"
    if abs(time.time() - timestamp) > TOLERANCE:
        return "timestamp too old"
    signed = str(timestamp).encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts["v1"]):
        return "signature mismatch"
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secrets", type=Path, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--ready", type=Path, required=True)
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            name = self.path.removeprefix("/hook/")
            secrets = json.loads(args.secrets.read_text()) if args.secrets.exists() else {}
            if name not in secrets:
                why: str | None = f"no secret for {name!r}"
            else:
                why = check_signature(secrets[name], self.headers.get("Godel-Signature", ""), body)
            record = {
                "verdict": "rejected" if why else "accepted",
                "reason": why,
                "hook": name,
                "deliveryId": self.headers.get("Godel-Delivery-Id"),
                "eventId": self.headers.get("Godel-Event-Id"),
                "contentType": self.headers.get("Content-Type"),
                "event": json.loads(body) if not why else None,
            }
            with args.log.open("a") as f:
                f.write(json.dumps(record) + "\n")
            self.send_response(401 if why else 200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *a: object) -> None:  # quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    tmp = args.ready.with_suffix(".tmp")
    tmp.write_text(str(server.server_address[1]))
    tmp.replace(args.ready)  # atomically: a reader never sees half a port
    server.serve_forever()


if __name__ == "__main__":
    main()
