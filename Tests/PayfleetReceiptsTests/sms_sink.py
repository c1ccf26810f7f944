"""A Twilio-compatible Messages API on loopback for receipt-sender's tests.

Each POST is appended as one JSON line to --out: path, the decoded Basic credentials, the form
fields (parsed by Python's urllib) and the Idempotency-Key header. Answers 201 with a message
resource; --fail-first N answers 503 to the first N requests (a provider outage); numbers
containing 99999 get Twilio's 400 (code 21211, invalid 'To').
"""
import argparse
import base64
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

lock = threading.Lock()
state = {"seen": 0}


def make_handler(out, fail_first):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            auth = self.headers.get("Authorization", "")
            user = password = None
            if auth.startswith("Basic "):
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            form = {k: v[0] if len(v) == 1 else v for k, v in parse_qs(body, keep_blank_values=True).items()}
            with lock:
                state["seen"] += 1
                n = state["seen"]
            if n <= fail_first:
                self.reply(503, {"code": 20500, "message": "Service unavailable", "status": 503})
                return
            if "99999" in form.get("To", ""):
                self.reply(400, {"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400})
                return
            rec = {"at": time.monotonic(), "path": self.path, "user": user, "password": password, "form": form,
                   "content_type": self.headers.get("Content-Type"),
                   "idempotency_key": self.headers.get("Idempotency-Key")}
            with lock:
                with open(out, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            self.reply(201, {"sid": "SM%032x" % n, "status": "queued", "to": form.get("To"), "body": form.get("Body")})

        def reply(self, status, obj):
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return H


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--fail-first", type=int, default=0)
    a = p.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), make_handler(a.out, a.fail_first))
    with open(a.ready_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(a.ready_file + ".tmp", a.ready_file)
    parent = os.getppid()

    def watch_parent():
        # Never outlive the test process that started us.
        while os.getppid() == parent:
            time.sleep(0.2)
        srv.shutdown()

    threading.Thread(target=watch_parent, daemon=True).start()
    srv.serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
