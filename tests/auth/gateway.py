#!/usr/bin/env python3
"""A stand-in for an authenticating API Gateway, for tests (Python standard library only).

One process plays, on one port:

* a gateway whose routes under ``--signed-prefix`` require AWS Signature Version 4, verified
  here from AWS's published algorithm (docs.aws.amazon.com/IAM/latest/UserGuide/
  create-signed-request.html) with hmac and hashlib, independent of any AWS SDK: method,
  canonical URI (each path segment URI-encoded twice, as every service but S3 expects),
  canonical query string, the signed headers (``host`` and ``x-amz-date`` required, every
  signed header's value as received), the SHA-256 of the body, the credential scope (date,
  region, service), the date's freshness and the session token;
* routes under ``--bearer-prefix`` that require ``Authorization: Bearer`` with a token this
  process issued and that has not expired (a JWT authorizer's job);
* an OAuth 2.0 token endpoint (``POST /oauth2/token``, client credentials grant, RFC 6749
  §4.4) whose tokens live ``--token-lifetime`` seconds; the client authenticates with HTTP
  Basic (its id and secret form-urlencoded first, §2.3.1) or in the body;
* an ECS-style credentials endpoint (``GET /ecs-credentials``, what
  ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` names) handing out new temporary credentials, with a
  session token, that live ``--creds-lifetime`` seconds: the SDK's default chain reads them;
* ``/reflect``: 500 with the caller's ``Authorization`` in ``x-amzn-ErrorType`` and the body,
  and its session token in ``Server``, as a careless gateway might;
* ``GET /_stats``: what it saw, as JSON; ``GET /_last``: the last request whose signature passed, as received
  (method, target, headers, body in hex), for a test to replay or tamper with.

Every other path answers 200. With ``--forward URL``, a signed request that passes goes on to
that URL and its answer comes back, as API Gateway forwards a request IAM authorized. Refusals look like API Gateway's own: 403 with
``x-amzn-ErrorType`` (MissingAuthenticationTokenException, InvalidSignatureException,
UnrecognizedClientException) and a ``{"message": ...}`` body, 401 ``{"message":"Unauthorized"}``.

Prints ``LISTEN <port>`` once it listens.
"""

import argparse
import base64
import datetime
import http.client
import hashlib
import hmac
import json
import secrets
import sys
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"


def uri_encode(text, keep_slash):
    """AWS's UriEncode: every byte but the unreserved ones as %XX, upper-case hex."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in UNRESERVED or (keep_slash and ch == "/"):
            out.append(ch)
        else:
            out.append("%%%02X" % byte)
    return "".join(out)


def canonical_query(raw):
    """Each name and value decoded, URI-encoded, sorted by name then value."""
    pairs = []
    for part in raw.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        name = urllib.parse.unquote(name)
        value = urllib.parse.unquote(value)
        pairs.append((uri_encode(name, False), uri_encode(value, False)))
    pairs.sort()
    return "&".join("%s=%s" % p for p in pairs)


def hmac_sha256(key, text):
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


class State:
    def __init__(self, args):
        self.args = args
        self.lock = threading.Lock()
        # access key id -> (secret, session token or None)
        self.keys = {}
        for entry in args.key or []:
            parts = entry.split(":")
            self.keys[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else None)
        # token -> expiry (monotonic)
        self.tokens = {}
        self.stats = {
            "sigv4_ok": 0,
            "sigv4_refused": 0,
            "sigv4_refusals": [],
            "signed_paths": [],
            "signed_hosts": [],
            "signatures": 0,
            "distinct_signatures": 0,
            "max_date_skew_s": 0.0,
            "token_fetches": 0,
            "token_refused": 0,
            "token_scopes": [],
            "token_client_auth": [],
            "bearer_ok": 0,
            "bearer_refused": 0,
            "creds_issued": 0,
            "other": 0,
            # What a leak would look like: every token issued and every signature accepted.
            "issued_tokens": [],
            "signature_list": [],
            "issued_secrets": [],
        }
        self.seen_signatures = set()
        self.last_signed = None

    def secret_for(self, key_id):
        with self.lock:
            found = self.keys.get(key_id)
        if found is None and self.args.moto:
            # Credentials moto's STS issued (AssumeRole): read back from its state.
            data = json.load(urllib.request.urlopen(self.args.moto + "/moto-api/data.json"))
            for role in data.get("sts", {}).get("AssumedRole", []):
                if role.get("access_key_id") == key_id:
                    found = (role["secret_access_key"], role["session_token"])
                    with self.lock:
                        self.keys[key_id] = found
        return found


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "gateway-standin"

    def log_message(self, *args):
        pass

    def answer(self, status, body, headers=()):
        data = json.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.send_header("x-amzn-RequestId", secrets.token_hex(16))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.close_connection = True

    def body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def route(self):
        state = self.server.state
        args = state.args
        path = self.path.split("?", 1)[0]
        body = self.body()
        if path == "/_stats":
            with state.lock:
                return self.answer(200, state.stats)
        if path == "/_last":
            with state.lock:
                return self.answer(200, state.last_signed or {})
        if path == "/oauth2/token" and self.command == "POST":
            return self.token(body)
        if path == "/ecs-credentials":
            return self.credentials()
        if path.startswith("/reflect"):
            # A gateway that hands the caller's credentials back in the headers a reason
            # quotes: hopwatch must not report them.
            return self.answer(
                500,
                {"message": self.headers.get("Authorization", "none")},
                [
                    ("x-amzn-ErrorType", self.headers.get("Authorization", "none")),
                    ("Server", self.headers.get("X-Amz-Security-Token", "none")),
                ],
            )
        if args.signed_prefix and path.startswith(args.signed_prefix):
            return self.signed(body)
        if args.bearer_prefix and path.startswith(args.bearer_prefix):
            return self.bearer()
        with state.lock:
            state.stats["other"] += 1
        return self.answer(200, {"ok": True})

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = route

    # SigV4 ------------------------------------------------------------------------------

    def refuse(self, error_type, message):
        state = self.server.state
        with state.lock:
            state.stats["sigv4_refused"] += 1
            state.stats["sigv4_refusals"].append(message[:200])
        return self.answer(403, {"message": message}, [("x-amzn-ErrorType", error_type)])

    def signed(self, body):
        state = self.server.state
        args = state.args
        auth = self.headers.get("Authorization")
        if not auth:
            return self.refuse("MissingAuthenticationTokenException", "Missing Authentication Token")
        algorithm, _, rest = auth.partition(" ")
        fields = {}
        for item in rest.split(","):
            name, _, value = item.strip().partition("=")
            fields[name] = value
        if algorithm != "AWS4-HMAC-SHA256" or not {"Credential", "SignedHeaders", "Signature"} <= set(fields):
            return self.refuse("IncompleteSignatureException", "Authorization header is not SigV4")
        key_id, date, region, service, terminal = (fields["Credential"].split("/") + [""] * 5)[:5]
        amz_date = self.headers.get("X-Amz-Date", "")
        try:
            signed_at = datetime.datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(
                tzinfo=datetime.timezone.utc
            )
        except ValueError:
            return self.refuse("IncompleteSignatureException", "X-Amz-Date missing or malformed")
        skew = abs(time.time() - signed_at.timestamp())
        if skew > args.max_skew:
            return self.refuse("InvalidSignatureException", "Signature expired: %s is %.0f s from now" % (amz_date, skew))
        if date != amz_date[:8] or region != args.region or service != args.service or terminal != "aws4_request":
            return self.refuse("InvalidSignatureException", "Credential should be scoped to a valid region and service: %s" % fields["Credential"])
        signed_headers = fields["SignedHeaders"].split(";")
        if "host" not in signed_headers or "x-amz-date" not in signed_headers:
            return self.refuse("InvalidSignatureException", "host and x-amz-date must be signed")
        found = state.secret_for(key_id)
        if found is None:
            return self.refuse("UnrecognizedClientException", "The security token included in the request is invalid.")
        secret, token = found
        if token is not None:
            if self.headers.get("X-Amz-Security-Token") != token:
                return self.refuse("UnrecognizedClientException", "The security token included in the request is invalid.")
            if "x-amz-security-token" not in signed_headers:
                return self.refuse("InvalidSignatureException", "x-amz-security-token is not signed")
        target = self.path
        raw_path, _, raw_query = target.partition("?")
        canonical_headers = ""
        for name in signed_headers:
            values = self.headers.get_all(name) or []
            value = ",".join(" ".join(v.split()) for v in values)
            canonical_headers += "%s:%s\n" % (name, value)
        canonical_request = "\n".join(
            [
                self.command,
                uri_encode(raw_path or "/", True),
                canonical_query(raw_query),
                canonical_headers,
                fields["SignedHeaders"],
                hashlib.sha256(body).hexdigest(),
            ]
        )
        string_to_sign = "\n".join(
            [
                "AWS4-HMAC-SHA256",
                amz_date,
                "%s/%s/%s/aws4_request" % (date, region, service),
                hashlib.sha256(canonical_request.encode("utf-8")).hexdigest(),
            ]
        )
        key = hmac_sha256(("AWS4" + secret).encode("utf-8"), date)
        key = hmac_sha256(key, region)
        key = hmac_sha256(key, service)
        key = hmac_sha256(key, "aws4_request")
        expected = hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, fields["Signature"]):
            return self.refuse(
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided.",
            )
        with state.lock:
            state.last_signed = {
                "method": self.command,
                "target": target,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_hex": body.hex(),
            }
            s = state.stats
            s["sigv4_ok"] += 1
            s["signatures"] += 1
            if fields["Signature"] not in state.seen_signatures:
                state.seen_signatures.add(fields["Signature"])
                s["distinct_signatures"] += 1
                if len(s["signature_list"]) < 1000:
                    s["signature_list"].append(fields["Signature"])
            s["max_date_skew_s"] = max(s["max_date_skew_s"], skew)
            if raw_path not in s["signed_paths"]:
                s["signed_paths"].append(raw_path)
            host = self.headers.get("Host")
            if host not in s["signed_hosts"]:
                s["signed_hosts"].append(host)
        if args.forward:
            return self.forward(body)
        return self.answer(200, {"ok": True, "signed": True})

    def forward(self, body):
        """Passes a request whose signature passed on to the integration (``--forward``), as
        API Gateway does after IAM authorization, and relays its answer."""
        url = urllib.parse.urlsplit(self.server.state.args.forward)
        hop_by_hop = {"connection", "keep-alive", "transfer-encoding", "content-length"}
        try:
            conn = http.client.HTTPConnection(url.hostname, url.port, timeout=2)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in hop_by_hop}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
        except OSError as e:
            return self.answer(504, {"message": "Endpoint request timed out (%s)" % e})
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in hop_by_hop:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.close_connection = True

    # OAuth 2.0 --------------------------------------------------------------------------

    def token(self, body):
        state = self.server.state
        args = state.args
        form = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True)
        one = lambda k: (form.get(k) or [None])[0]
        client_id = client_secret = None
        how = "none"
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            user, _, password = base64.b64decode(auth[6:]).decode("utf-8").partition(":")
            # RFC 6749 §2.3.1: both were form-urlencoded before base64.
            client_id, client_secret = urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(password)
            how = "basic"
        elif one("client_id") is not None:
            client_id, client_secret = one("client_id"), one("client_secret")
            how = "body"
        expected_id, _, expected_secret = args.client.partition(":")
        refused = args.refuse or (client_id, client_secret) != (expected_id, expected_secret)
        with state.lock:
            state.stats["token_client_auth"].append(how)
            if refused:
                state.stats["token_refused"] += 1
        if refused:
            return self.answer(401, {"error": "invalid_client"}, [("WWW-Authenticate", "Basic")])
        if one("grant_type") != "client_credentials":
            return self.answer(400, {"error": "unsupported_grant_type"})
        token = secrets.token_urlsafe(24)
        with state.lock:
            state.tokens[token] = time.monotonic() + args.token_lifetime
            state.stats["token_fetches"] += 1
            state.stats["token_scopes"].append(one("scope"))
            if len(state.stats["issued_tokens"]) < 1000:
                state.stats["issued_tokens"].append(token)
        return self.answer(
            200,
            {"access_token": token, "token_type": "Bearer", "expires_in": args.token_lifetime},
        )

    def bearer(self):
        state = self.server.state
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        with state.lock:
            expiry = state.tokens.get(token)
            ok = expiry is not None and time.monotonic() < expiry
            state.stats["bearer_ok" if ok else "bearer_refused"] += 1
        if not ok:
            return self.answer(401, {"message": "Unauthorized"}, [("WWW-Authenticate", "Bearer")])
        return self.answer(200, {"ok": True, "bearer": True})

    # ECS-style credentials ----------------------------------------------------------------

    def credentials(self):
        state = self.server.state
        key_id = "ASIA" + secrets.token_hex(8).upper()
        secret = secrets.token_urlsafe(30)
        token = secrets.token_urlsafe(60)
        expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
            seconds=state.args.creds_lifetime
        )
        with state.lock:
            state.keys[key_id] = (secret, token)
            state.stats["creds_issued"] += 1
            if len(state.stats["issued_secrets"]) < 1000:
                state.stats["issued_secrets"] += [secret, token]
        return self.answer(
            200,
            {
                "AccessKeyId": key_id,
                "SecretAccessKey": secret,
                "Token": token,
                "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", default="127.0.0.1:0")
    p.add_argument("--region", default="eu-west-1")
    p.add_argument("--service", default="execute-api")
    p.add_argument("--key", action="append", help="ACCESS_KEY_ID:SECRET[:SESSION_TOKEN]")
    p.add_argument("--moto", help="moto's endpoint, to look up credentials its STS issued")
    p.add_argument("--forward", help="pass requests whose signature passed on to this http:// URL")
    p.add_argument("--max-skew", type=float, default=300.0, help="seconds (AWS allows 5 minutes)")
    p.add_argument("--signed-prefix", default="/signed")
    p.add_argument("--bearer-prefix", default="/bearer")
    p.add_argument("--client", default="client:secret", help="CLIENT_ID:CLIENT_SECRET")
    p.add_argument("--refuse", action="store_true", help="refuse every client")
    p.add_argument("--token-lifetime", type=int, default=3600)
    p.add_argument("--creds-lifetime", type=int, default=3600)
    args = p.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    server.state = State(args)
    print("LISTEN %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
