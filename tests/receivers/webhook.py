"""A webhook receiver for the delivery tests: Python's own http.server.

Usage: webhook.py PORT LOG [--fail N] [--status CODE] [--hang]

Listens on 127.0.0.1:PORT (0: any free port, written to LOG.port), and
appends each POST to LOG as one JSON line {"path", "headers", "body"}. The
first N requests get HTTP 503 (a receiver coming back up); --status answers
every request with CODE; --hang accepts requests and never answers.
"""

import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer


def main():
    port, log = int(sys.argv[1]), sys.argv[2]
    args = sys.argv[3:]
    fail = int(args[args.index("--fail") + 1]) if "--fail" in args else 0
    status = int(args[args.index("--status") + 1]) if "--status" in args else 200
    hang = "--hang" in args
    seen = {"requests": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            seen["requests"] += 1
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if hang:
                time.sleep(3600)
            code = 503 if seen["requests"] <= fail else status
            if code == 200:
                entry = {
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": json.loads(body),
                }
                with open(log, "a", encoding="utf-8") as f:
                    f.write(json.dumps(entry) + "\n")
            reply = b"ok" if code == 200 else b"not now"
            self.send_response(code)
            if 300 <= code < 400:
                self.send_header("Location", "https://elsewhere.example/hook")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", port), Handler)
    with open(log + ".port", "w", encoding="utf-8") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
