#!/usr/bin/env python3
"""A stand-in for Amazon ECR's GetAuthorizationToken, for skiff's auth tests. No AWS involved.

    fake_ecr.py serve --port P --access-key AK --secret-key SK --region R --password PW
                      [--session-token T] [--log FILE]
    fake_ecr.py selftest

`serve` answers POST / like api.ecr.<region>.amazonaws.com: it checks X-Amz-Target and
Content-Type, parses the SigV4 Authorization header (credential scope, signed headers), and
recomputes the signature from the request it received with its own SigV4 code (below, written
independently of skiff's) and SK. A good request gets {"authorizationData": [{
"authorizationToken": base64("AWS:PW"), "expiresAt": now + 12 h, "proxyEndpoint": ...}]}; a bad
one gets the error AWS would give. Each request is logged to FILE as one JSON line (with the
canonical request it computed). `selftest` checks this SigV4 code against AWS's published
test vectors (get-vanilla, post-x-www-form-urlencoded).
"""
import argparse
import base64
import calendar
import hashlib
import hmac
import json
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, urlparse, parse_qsl

TARGET = "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken"


def canonical_request(method, path, query, headers, signed, payload):
    q = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in parse_qsl(query, keep_blank_values=True))
    lines = [method, quote(path, safe="/-_.~"), "&".join(f"{k}={v}" for k, v in q)]
    for h in signed:
        lines.append(h + ":" + " ".join(headers[h].strip().split()))
    return "\n".join(lines) + "\n\n" + ";".join(signed) + "\n" + hashlib.sha256(payload).hexdigest()


def signature(secret, amz_date, region, service, creq):
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (amz_date[:8], region, service, "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()


def selftest():
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    h = {"host": "example.amazonaws.com", "x-amz-date": "20150830T123600Z"}
    creq = canonical_request("GET", "/", "", h, ["host", "x-amz-date"], b"")
    got = signature(secret, "20150830T123600Z", "us-east-1", "service", creq)
    assert got == "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31", got
    h["content-type"] = "application/x-www-form-urlencoded"
    creq = canonical_request("POST", "/", "", h, ["content-type", "host", "x-amz-date"], b"Param1=value1")
    got = signature(secret, "20150830T123600Z", "us-east-1", "service", creq)
    assert got == "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a", got
    print("fake_ecr selftest ok")


AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=([^/,]+)/(\d{8})/([a-z0-9-]+)/([a-z0-9-]+)/aws4_request, "
    r"SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$"
)


def serve(args):
    lock = threading.Lock()

    def log(entry):
        if args.log:
            with lock, open(args.log, "a") as f:
                f.write(json.dumps(entry) + "\n")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def reply(self, code, body, entry):
            entry["status"] = code
            log(entry)
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def fail(self, code, typ, msg, entry):
            entry["error"] = f"{typ}: {msg}"
            self.reply(code, {"__type": typ, "message": msg}, entry)

        def do_POST(self):
            n = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(n)
            u = urlparse(self.path)
            headers = {k.lower(): v for k, v in self.headers.items()}
            entry = {"authorization": headers.get("authorization", ""), "target": headers.get("x-amz-target", "")}
            if headers.get("x-amz-target") != TARGET:
                return self.fail(400, "UnknownOperationException", "unknown target", entry)
            if headers.get("content-type") != "application/x-amz-json-1.1":
                return self.fail(400, "SerializationException", "bad content type", entry)
            m = AUTH_RE.match(headers.get("authorization", ""))
            if not m:
                return self.fail(400, "IncompleteSignatureException", "malformed Authorization", entry)
            ak, date, region, service, signed, sig = m.groups()
            signed = signed.split(";")
            amz_date = headers.get("x-amz-date", "")
            if ak != args.access_key:
                return self.fail(400, "UnrecognizedClientException", "The security token included in the request is invalid.", entry)
            if region != args.region or service != "ecr" or amz_date[:8] != date:
                return self.fail(403, "InvalidSignatureException", "Credential should be scoped to a valid region/service/date", entry)
            need = {"host", "x-amz-date", "x-amz-target", "content-type"}
            if args.session_token:
                need.add("x-amz-security-token")
                if headers.get("x-amz-security-token") != args.session_token:
                    return self.fail(400, "UnrecognizedClientException", "bad session token", entry)
            if not need <= set(signed) or signed != sorted(signed) or any(h not in headers for h in signed):
                return self.fail(403, "InvalidSignatureException", f"signed headers {signed} lack {sorted(need)}", entry)
            try:
                t = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
            except ValueError:
                return self.fail(400, "IncompleteSignatureException", "bad X-Amz-Date", entry)
            if abs(time.time() - t) > 300:
                return self.fail(403, "InvalidSignatureException", "Signature expired", entry)
            creq = canonical_request("POST", u.path, u.query, headers, signed, body)
            entry["canonical_request"] = creq
            want = signature(args.secret_key, amz_date, region, "ecr", creq)
            if not hmac.compare_digest(want, sig):
                return self.fail(403, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided.", entry)
            if json.loads(body or b"null") != {}:
                return self.fail(400, "SerializationException", "body must be {}", entry)
            token = base64.b64encode(f"AWS:{args.password}".encode()).decode()
            entry["signature_ok"] = True
            self.reply(200, {"authorizationData": [{
                "authorizationToken": token,
                "expiresAt": time.time() + 12 * 3600,
                "proxyEndpoint": "https://123456789012.dkr.ecr.%s.amazonaws.com" % region,
            }]}, entry)

    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True
    print(f"fake ECR on 127.0.0.1:{args.port}", flush=True)
    srv.serve_forever()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--access-key", required=True)
    s.add_argument("--secret-key", required=True)
    s.add_argument("--session-token")
    s.add_argument("--region", required=True)
    s.add_argument("--password", required=True)
    s.add_argument("--log")
    sub.add_parser("selftest")
    args = p.parse_args()
    if args.cmd == "selftest":
        selftest()
    else:
        serve(args)


if __name__ == "__main__":
    sys.exit(main())
