#!/usr/bin/env python3
"""A tiny token issuer for the Docker registry token protocol, for skiff's auth tests.

    token_server.py serve --port P --key KEY.pem --cert CERT.pem --issuer I --service S
                          [--user NAME:PASS]... [--refresh-token TOKEN]... [--expires-in SECONDS]
                          [--first-invalid] [--log FILE]
    token_server.py mint --key KEY.pem --cert CERT.pem --issuer I --service S --scope SCOPE...

`serve` answers GET /token?service=..&scope=.. (Basic credentials required: anonymous callers
get 401) with {"token", "expires_in"}, and POST /token (form: grant_type=refresh_token with a
known refresh_token, or grant_type=password) with {"access_token", "expires_in"}. Tokens are
JWTs signed RS256 with KEY; their header carries CERT in `x5c`, which the registry checks
against its rootcertbundle. --first-invalid makes the first token issued one that expired an
hour ago (announced as valid for --expires-in), so that the registry answers
error="invalid_token". Each request is logged to FILE as one JSON line. `mint` prints a token
for the given scopes (e.g. to push test images).
"""
import argparse
import base64
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def cert_der(cert):
    return subprocess.run(
        ["openssl", "x509", "-in", cert, "-outform", "DER"], capture_output=True, check=True
    ).stdout


def access_of(scopes):
    access = []
    for s in scopes:
        for one in s.split(" "):
            parts = one.split(":")
            if len(parts) < 3:
                continue
            actions = [a for a in parts[-1].split(",") if a]
            access.append({"type": parts[0], "name": ":".join(parts[1:-1]), "actions": actions})
    return access


def mint(key, der, issuer, service, subject, scopes, lifetime, expired=False):
    now = int(time.time())
    header = {"typ": "JWT", "alg": "RS256", "x5c": [base64.b64encode(der).decode()]}
    exp = now - 3600 if expired else now + lifetime
    claims = {
        "iss": issuer,
        "sub": subject,
        "aud": service,
        "exp": exp,
        "nbf": min(now, exp) - 60,
        "iat": min(now, exp) - 60,
        "jti": os.urandom(8).hex(),
        "access": access_of(scopes),
    }
    signing_input = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(claims, separators=(",", ":")).encode())
    )
    sig = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", key],
        input=signing_input.encode(),
        capture_output=True,
        check=True,
    ).stdout
    return signing_input + "." + b64url(sig)


def serve(args):
    der = cert_der(args.cert)
    users = dict(u.split(":", 1) for u in args.user)
    lock = threading.Lock()
    state = {"issued": 0}

    def log(entry):
        if args.log:
            with lock, open(args.log, "a") as f:
                f.write(json.dumps(entry) + "\n")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if code == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="skiff-test-token"')
            self.end_headers()
            self.wfile.write(data)

        def issue(self, subject, scopes, key_name, entry):
            with lock:
                state["issued"] += 1
                expired = args.first_invalid and state["issued"] == 1
            tok = mint(args.key, der, args.issuer, args.service, subject, scopes,
                       args.expires_in, expired)
            entry.update(result="token", expired=expired)
            log(entry)
            self.reply(200, {key_name: tok, "expires_in": args.expires_in})

        def do_GET(self):
            u = urlparse(self.path)
            q = parse_qs(u.query)
            entry = {"method": "GET", "path": u.path, "scope": q.get("scope", []),
                     "service": q.get("service", [""])[0]}
            if u.path != "/token" or entry["service"] != args.service:
                entry["result"] = "bad request"
                log(entry)
                return self.reply(400, {"errors": [{"code": "BAD_REQUEST"}]})
            user = None
            a = self.headers.get("Authorization", "")
            if a.startswith("Basic "):
                name, _, pw = base64.b64decode(a[6:]).decode().partition(":")
                entry["user"] = name
                if users.get(name) != pw:
                    entry["result"] = "denied"
                    log(entry)
                    return self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
                user = name
            if user is None:
                entry["result"] = "anonymous refused"
                log(entry)
                return self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]})
            self.issue(user, q.get("scope", []), "token", entry)

        def do_POST(self):
            u = urlparse(self.path)
            n = int(self.headers.get("Content-Length", "0"))
            form = parse_qs(self.rfile.read(n).decode())
            get = lambda k: form.get(k, [""])[0]
            entry = {"method": "POST", "path": u.path, "grant_type": get("grant_type"),
                     "scope": form.get("scope", []), "service": get("service"),
                     "client_id": get("client_id")}
            if u.path != "/token" or get("service") != args.service:
                entry["result"] = "bad request"
                log(entry)
                return self.reply(400, {"errors": [{"code": "BAD_REQUEST"}]})
            if get("grant_type") == "refresh_token" and get("refresh_token") in args.refresh_token:
                return self.issue("refresh-user", form.get("scope", []), "access_token", entry)
            if get("grant_type") == "password" and users.get(get("username")) == get("password"):
                return self.issue(get("username"), form.get("scope", []), "access_token", entry)
            entry["result"] = "denied"
            log(entry)
            self.reply(401, {"error": "invalid_grant"})

    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    print(f"token server on 127.0.0.1:{args.port}", flush=True)
    srv.serve_forever()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("serve", "mint"):
        s = sub.add_parser(name)
        s.add_argument("--key", required=True)
        s.add_argument("--cert", required=True)
        s.add_argument("--issuer", required=True)
        s.add_argument("--service", required=True)
        s.add_argument("--expires-in", type=int, default=300)
    s = sub.choices["serve"]
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--user", action="append", default=[])
    s.add_argument("--refresh-token", action="append", default=[])
    s.add_argument("--first-invalid", action="store_true")
    s.add_argument("--log")
    sub.choices["mint"].add_argument("--scope", action="append", default=[])
    args = p.parse_args()
    if args.cmd == "serve":
        serve(args)
    else:
        print(mint(args.key, cert_der(args.cert), args.issuer, args.service, "pusher",
                   args.scope, args.expires_in))


if __name__ == "__main__":
    sys.exit(main())
