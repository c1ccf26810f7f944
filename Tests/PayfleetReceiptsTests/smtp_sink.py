"""A real SMTP server (aiosmtpd) on loopback for receipt-sender's tests.

Every accepted message is written twice into --dir: the raw bytes (NNNN.eml) and what
Python's own email parser makes of them (NNNN.json: decoded headers and MIME parts), so the
tests check the message with an independent MIME implementation.

Options: --auth USER:PASS requires AUTH; --tls CERT:KEY offers STARTTLS (and requires it);
recipients containing "reject" get 550; --fail-first N: the first N messages get 451 at DATA
(a transient refusal, nothing stored); --kill-pid-file F: on the first message, after it
is stored, SIGKILL the pid written in F (a crash between the send and its commit) and delete F.
"""
import argparse
import email
import email.policy
import json
import os
import signal
import ssl
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Handler:
    def __init__(self, out, kill_pid_file, fail_first=0):
        self.out = out
        self.kill_pid_file = kill_pid_file
        self.fail_first = fail_first
        self.lock = threading.Lock()
        self.n = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if "reject" in address:
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown in local recipient table" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                return "451 4.3.0 Temporary failure, try again later"
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        parts = []
        for part in msg.walk():
            if part.is_multipart():
                continue
            parts.append({"content_type": part.get_content_type(), "charset": part.get_content_charset(),
                          "body": part.get_content()})
        info = {
            "mail_from": envelope.mail_from,
            # The client's address and port: one per SMTP connection (tests count sessions).
            "peer": list(session.peer) if session.peer else None,
            "rcpt_tos": envelope.rcpt_tos,
            "authenticated": bool(session.authenticated),
            "auth_login": session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None,
            "tls": session.ssl is not None or bool(server.transport and server.transport.get_extra_info("sslcontext")),
            "headers": {k: str(v) for k, v in msg.items()},
            "raw_subject": msg.get("Subject", failobj=None) and raw.split(b"\r\n\r\n", 1)[0].decode("ascii", "replace"),
            "content_type": msg.get_content_type(),
            "parts": parts,
            "defects": [str(d) for d in msg.defects],
        }
        with self.lock:
            self.n += 1
            stem = os.path.join(self.out, "%04d-%d" % (self.n, time.time_ns()))
        with open(stem + ".eml.tmp", "wb") as f:
            f.write(raw)
        os.rename(stem + ".eml.tmp", stem + ".eml")
        with open(stem + ".json.tmp", "w") as f:
            json.dump(info, f)
        os.rename(stem + ".json.tmp", stem + ".json")
        if self.kill_pid_file and os.path.exists(self.kill_pid_file):
            with open(self.kill_pid_file) as f:
                pid = int(f.read().strip())
            os.remove(self.kill_pid_file)
            os.kill(pid, signal.SIGKILL)
        return "250 2.0.0 Ok: queued"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--ready-file", required=True)
    p.add_argument("--auth")
    p.add_argument("--tls")
    p.add_argument("--implicit-tls", action="store_true")
    p.add_argument("--kill-pid-file")
    p.add_argument("--fail-first", type=int, default=0)
    a = p.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    kwargs = {}
    if a.auth:
        user, password = a.auth.split(":", 1)

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login.decode() == user \
                and auth_data.password.decode() == password
            return AuthResult(success=ok, handled=False, auth_data=auth_data)

        kwargs.update(authenticator=authenticator, auth_required=True, auth_require_tls=bool(a.tls) and not a.implicit_tls)
    if a.tls:
        cert, key = a.tls.split(":", 1)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        if a.implicit_tls:
            kwargs.update(ssl_context=ctx)
        else:
            kwargs.update(tls_context=ctx, require_starttls=True)
    c = Controller(Handler(a.dir, a.kill_pid_file, a.fail_first), hostname="127.0.0.1", port=a.port, **kwargs)
    c.start()
    with open(a.ready_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(a.ready_file + ".tmp", a.ready_file)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    parent = os.getppid()
    # Short waits so signals are handled, and never outlive the test process that started us.
    while not stop.wait(0.2) and os.getppid() == parent:
        pass
    c.stop()


if __name__ == "__main__":
    main()
