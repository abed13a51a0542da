"""A stand-in webhook receiver for the compose stack: logs every POSTed JSON payload.

Alertmanager (and Sentinel's own webhook sink) post the Alertmanager webhook
payload, version "4"; this prints receiver, status and each alert's labels.
"""

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            msg = json.loads(body)
            for a in msg.get("alerts", []):
                print(self.path, msg.get("receiver"), a.get("status"), json.dumps(a.get("labels")), flush=True)
        except ValueError:
            print(self.path, "non-JSON body", len(body), "bytes", flush=True)
        self.send_response(200)
        self.end_headers()


ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
