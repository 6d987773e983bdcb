#!/usr/bin/env python3
"""A reverse proxy in front of a moto server that throttles chosen AWS calls the way AWS does,
and remembers every call it saw. Python's standard library only.

    python fault_proxy.py --moto http://127.0.0.1:MOTO_PORT [--port 0]

Binds 127.0.0.1 only. Its first line on stdout is the port it listens on (the one given, or
the one the system chose for --port 0). Every request is forwarded to moto and moto's answer
returned unchanged (status, headers, body), unless the request's (service, operation) is
throttled: then the proxy answers, without asking moto, with that service's own throttling
error in its own protocol (`THROTTLE_ANSWERS` below).

A request's service is the signing name in its SigV4 credential scope
(`Credential=AK/20261204/us-east-1/ec2/aws4_request` -> `ec2`; REST and HTTP APIs both sign
as `apigateway`); its operation is the form body's `Action=` (Query and EC2 protocols), the
`X-Amz-Target` after its dot (AWS JSON), the path's last segment (Smithy RPC v2 CBOR), or, for
API Gateway's REST protocol, the operation whose method and path template match
(`APIGATEWAY_ROUTES`, from botocore's apigateway 2015-07-09 and apigatewayv2 2018-11-29
models); anything else is its method and path template (`GET /things/{}`).

Controlled over HTTP on itself, under /_fault/, a path moto never serves:

    POST /_fault/throttle      {"rules": [["ec2", "DescribeSecurityGroups"], ["elasticloadbalancing", "*"]]}
                               replaces the throttled set; [] clears it. "*" is every operation.
    GET  /_fault/throttle      the rules in force
    GET  /_fault/calls         every proxied call, oldest first:
                               {"t": unix seconds, "service", "operation", "status", "throttled"}
    POST /_fault/calls/reset   forgets them
"""
import argparse
import http.client
import http.server
import json
import re
import sys
import threading
import time
import urllib.parse
import uuid

# Headers that describe one connection, not the message (RFC 9110 7.6.1): never forwarded.
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
              "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}

# API Gateway's operations that hopwatch and its tests call, as botocore's models route them:
# botocore/data/apigateway/2015-07-09/service-2.json and apigatewayv2/2018-11-29 (read-only
# calls in full; writes the fixtures make). Both APIs sign as `apigateway`; version 2 lives
# under /v2/. "?mode=import" means the query must hold mode=import.
APIGATEWAY_ROUTES = """
GET /account GetAccount
GET /apikeys GetApiKeys
GET /apikeys/{} GetApiKey
GET /clientcertificates GetClientCertificates
GET /clientcertificates/{} GetClientCertificate
GET /domainnames GetDomainNames
POST /domainnames CreateDomainName
GET /domainnames/{} GetDomainName
DELETE /domainnames/{} DeleteDomainName
GET /domainnames/{}/basepathmappings GetBasePathMappings
POST /domainnames/{}/basepathmappings CreateBasePathMapping
GET /domainnames/{}/basepathmappings/{} GetBasePathMapping
GET /restapis GetRestApis
POST /restapis?mode=import ImportRestApi
POST /restapis CreateRestApi
GET /restapis/{} GetRestApi
DELETE /restapis/{} DeleteRestApi
PUT /restapis/{} PutRestApi
PATCH /restapis/{} UpdateRestApi
GET /restapis/{}/authorizers GetAuthorizers
GET /restapis/{}/authorizers/{} GetAuthorizer
GET /restapis/{}/deployments GetDeployments
POST /restapis/{}/deployments CreateDeployment
GET /restapis/{}/deployments/{} GetDeployment
DELETE /restapis/{}/deployments/{} DeleteDeployment
GET /restapis/{}/gatewayresponses GetGatewayResponses
GET /restapis/{}/gatewayresponses/{} GetGatewayResponse
GET /restapis/{}/models GetModels
GET /restapis/{}/models/{} GetModel
GET /restapis/{}/requestvalidators GetRequestValidators
GET /restapis/{}/requestvalidators/{} GetRequestValidator
GET /restapis/{}/resources GetResources
POST /restapis/{}/resources/{} CreateResource
GET /restapis/{}/resources/{} GetResource
DELETE /restapis/{}/resources/{} DeleteResource
PATCH /restapis/{}/resources/{} UpdateResource
GET /restapis/{}/resources/{}/methods/{} GetMethod
PUT /restapis/{}/resources/{}/methods/{} PutMethod
DELETE /restapis/{}/resources/{}/methods/{} DeleteMethod
PATCH /restapis/{}/resources/{}/methods/{} UpdateMethod
POST /restapis/{}/resources/{}/methods/{} TestInvokeMethod
GET /restapis/{}/resources/{}/methods/{}/integration GetIntegration
PUT /restapis/{}/resources/{}/methods/{}/integration PutIntegration
DELETE /restapis/{}/resources/{}/methods/{}/integration DeleteIntegration
PATCH /restapis/{}/resources/{}/methods/{}/integration UpdateIntegration
GET /restapis/{}/resources/{}/methods/{}/integration/responses/{} GetIntegrationResponse
PUT /restapis/{}/resources/{}/methods/{}/integration/responses/{} PutIntegrationResponse
GET /restapis/{}/resources/{}/methods/{}/responses/{} GetMethodResponse
PUT /restapis/{}/resources/{}/methods/{}/responses/{} PutMethodResponse
GET /restapis/{}/stages GetStages
POST /restapis/{}/stages CreateStage
GET /restapis/{}/stages/{} GetStage
DELETE /restapis/{}/stages/{} DeleteStage
PATCH /restapis/{}/stages/{} UpdateStage
GET /restapis/{}/stages/{}/exports/{} GetExport
GET /restapis/{}/stages/{}/sdks/{} GetSdk
GET /tags/{} GetTags
PUT /tags/{} TagResource
DELETE /tags/{} UntagResource
GET /usageplans GetUsagePlans
GET /usageplans/{} GetUsagePlan
GET /vpclinks GetVpcLinks
POST /vpclinks CreateVpcLink
GET /vpclinks/{} GetVpcLink
DELETE /vpclinks/{} DeleteVpcLink
PATCH /vpclinks/{} UpdateVpcLink
GET /v2/apis GetApis
POST /v2/apis CreateApi
PUT /v2/apis ImportApi
GET /v2/apis/{} GetApi
DELETE /v2/apis/{} DeleteApi
PUT /v2/apis/{} ReimportApi
PATCH /v2/apis/{} UpdateApi
GET /v2/apis/{}/authorizers GetAuthorizers
GET /v2/apis/{}/authorizers/{} GetAuthorizer
GET /v2/apis/{}/deployments GetDeployments
POST /v2/apis/{}/deployments CreateDeployment
GET /v2/apis/{}/deployments/{} GetDeployment
GET /v2/apis/{}/exports/{} ExportApi
GET /v2/apis/{}/integrations GetIntegrations
POST /v2/apis/{}/integrations CreateIntegration
GET /v2/apis/{}/integrations/{} GetIntegration
DELETE /v2/apis/{}/integrations/{} DeleteIntegration
PATCH /v2/apis/{}/integrations/{} UpdateIntegration
GET /v2/apis/{}/routes GetRoutes
POST /v2/apis/{}/routes CreateRoute
GET /v2/apis/{}/routes/{} GetRoute
DELETE /v2/apis/{}/routes/{} DeleteRoute
PATCH /v2/apis/{}/routes/{} UpdateRoute
GET /v2/apis/{}/stages GetStages
POST /v2/apis/{}/stages CreateStage
GET /v2/apis/{}/stages/{} GetStage
DELETE /v2/apis/{}/stages/{} DeleteStage
PATCH /v2/apis/{}/stages/{} UpdateStage
GET /v2/domainnames GetDomainNames
POST /v2/domainnames CreateDomainName
GET /v2/domainnames/{} GetDomainName
GET /v2/domainnames/{}/apimappings GetApiMappings
POST /v2/domainnames/{}/apimappings CreateApiMapping
GET /v2/domainnames/{}/apimappings/{} GetApiMapping
GET /v2/tags/{} GetTags
POST /v2/tags/{} TagResource
DELETE /v2/tags/{} UntagResource
GET /v2/vpclinks GetVpcLinks
POST /v2/vpclinks CreateVpcLink
GET /v2/vpclinks/{} GetVpcLink
DELETE /v2/vpclinks/{} DeleteVpcLink
PATCH /v2/vpclinks/{} UpdateVpcLink
"""


def _routes():
    routes = []
    for line in APIGATEWAY_ROUTES.strip().splitlines():
        method, template, operation = line.split()
        template, _, mode = template.partition("?mode=")
        pattern = "^" + re.escape(template).replace(re.escape("{}"), "[^/]+") + "/?$"
        routes.append((method, re.compile(pattern), mode or None, operation))
    return routes


ROUTES = _routes()


def path_template(path):
    """A REST path with its identifiers blanked: API Gateway's paths alternate a collection
    and one of its members (/restapis/{}/stages/{}), after /v2 for version 2."""
    segments = [s for s in path.split("/") if s]
    lead = 1 if segments[:1] == ["v2"] else 0
    return "/" + "/".join(s if i < lead or (i - lead) % 2 == 0 else "{}"
                          for i, s in enumerate(segments))


def service_of(headers, query):
    """The signing name in the request's SigV4 credential scope, or "unsigned"."""
    match = re.search(r"Credential=([^,\s]+)", headers.get("Authorization", ""))
    scope = match.group(1) if match else (query.get("X-Amz-Credential") or [""])[0]
    parts = scope.split("/")
    return parts[-2] if len(parts) >= 5 and parts[-1] == "aws4_request" else "unsigned"


def operation_of(service, method, path, query, headers, body):
    target = headers.get("X-Amz-Target")
    if target:  # AWS JSON 1.0/1.1: Route53AutoNaming_v20170314.GetService
        return target.rsplit(".", 1)[-1]
    match = re.match(r"^/service/[^/]+/operation/([^/]+)$", path)
    if match:  # Smithy RPC v2 CBOR
        return match.group(1)
    if body and b"Action=" in body:  # Query and EC2 protocols: a form body
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        if form.get("Action"):
            return form["Action"][0]
    if query.get("Action"):
        return query["Action"][0]
    if service == "apigateway":
        for route_method, pattern, mode, operation in ROUTES:
            if route_method == method and pattern.match(path):
                if mode is None or (query.get("mode") or [""])[0] == mode:
                    return operation
    return f"{method} {path_template(path)}"


def request_id():
    return str(uuid.uuid4())


def _cbor_text(s):
    data = s.encode()
    n = len(data)
    head = bytes([0x60 | n]) if n < 24 else bytes([0x78, n]) if n < 256 else bytes([0x79]) + n.to_bytes(2, "big")
    return head + data


def _json_error(status, code, message, cbor):
    """An AWS JSON 1.1 error (or, to a Smithy RPC v2 CBOR request, the same in CBOR)."""
    headers = [("x-amzn-RequestId", request_id())]
    if cbor:
        body = bytes([0xA2]) + _cbor_text("__type") + _cbor_text(code) + _cbor_text("message") + _cbor_text(message)
        headers += [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor")]
        return status, headers, body
    body = json.dumps({"__type": code, "message": message}).encode()
    return status, headers + [("Content-Type", "application/x-amz-json-1.1")], body


def _query_error(status, code, message, xmlns):
    """An AWS Query protocol error, as ELB, STS, CloudFormation send them."""
    rid = request_id()
    attr = f' xmlns="{xmlns}"' if xmlns else ""
    body = (f"<ErrorResponse{attr}><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
            f"</Error><RequestId>{rid}</RequestId></ErrorResponse>")
    return status, [("x-amzn-RequestId", rid), ("Content-Type", "text/xml")], body.encode()


def throttle_ec2(operation, headers):
    # EC2 answers a call over its request-rate bucket with RequestLimitExceeded, HTTP 503, in
    # the EC2 protocol's <Response><Errors> envelope:
    # https://docs.aws.amazon.com/AWSEC2/latest/APIReference/errors-overview.html
    # https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html
    rid = request_id()
    body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>RequestLimitExceeded</Code>'
            f"<Message>Request limit exceeded.</Message></Error></Errors><RequestID>{rid}</RequestID></Response>")
    return 503, [("Content-Type", "text/xml;charset=UTF-8")], body.encode()


def throttle_elb(operation, headers):
    # ELB's API over its token bucket: "Rate exceeded", HTTP 400, Query protocol's
    # <ErrorResponse>. https://docs.aws.amazon.com/elasticloadbalancing/latest/userguide/elb-api-throttling.html
    # names the error "ThrottlingException"; the code on the wire is "Throttling" (what the SDKs
    # report: "Status Code: 400; Error Code: Throttling", e.g. spinnaker/spinnaker#1975), see also
    # https://docs.aws.amazon.com/elasticloadbalancing/latest/APIReference/CommonErrors.html
    return _query_error(400, "Throttling", "Rate exceeded", "http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/")


def throttle_apigateway(operation, headers):
    # API Gateway's management API (REST and HTTP APIs alike) over its account quota, e.g.
    # GetResources 5 requests per 2 seconds, 10 per second across management operations:
    # https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html
    # TooManyRequestsException, HTTP 429 (the apigateway and apigatewayv2 models' error shape),
    # its code in x-amzn-ErrorType, the body {"message": "Too Many Requests"}.
    headers = [("x-amzn-RequestId", request_id()), ("x-amzn-ErrorType", "TooManyRequestsException"),
               ("Content-Type", "application/json")]
    return 429, headers, b'{"message":"Too Many Requests"}'


def throttle_servicediscovery(operation, headers):
    cbor = headers.get("smithy-protocol", "").lower() == "rpc-v2-cbor"
    if operation in ("DiscoverInstances", "DiscoverInstancesRevision"):
        # Cloud Map's data plane over its bucket: RequestLimitExceeded (HTTP 429 in the
        # servicediscovery model's error shape).
        # https://docs.aws.amazon.com/cloud-map/latest/dg/throttling.html
        # https://docs.aws.amazon.com/cloud-map/latest/api/API_DiscoverInstances.html#API_DiscoverInstances_Errors
        return _json_error(429, "RequestLimitExceeded", "Rate exceeded", cbor)
    # Every other Cloud Map operation: the common ThrottlingException, HTTP 400.
    # https://docs.aws.amazon.com/cloud-map/latest/api/CommonErrors.html
    return _json_error(400, "ThrottlingException", "Rate exceeded", cbor)


def throttle_logs(operation, headers):
    # CloudWatch Logs: ThrottlingException, HTTP 400, AWS JSON 1.1.
    # https://docs.aws.amazon.com/AmazonCloudWatchLogs/latest/APIReference/CommonErrors.html
    return _json_error(400, "ThrottlingException", "Rate exceeded", False)


def throttle_sts(operation, headers):
    # STS (Query protocol): Throttling, HTTP 400.
    # https://docs.aws.amazon.com/STS/latest/APIReference/CommonErrors.html
    return _query_error(400, "Throttling", "Rate exceeded", "https://sts.amazonaws.com/doc/2011-06-15/")


def throttle_other(operation, headers):
    """A service without its own entry: the common ThrottlingException, in the protocol the
    request was made in."""
    if headers.get("X-Amz-Target") or headers.get("smithy-protocol"):
        return _json_error(400, "ThrottlingException", "Rate exceeded",
                           headers.get("smithy-protocol", "").lower() == "rpc-v2-cbor")
    if "x-www-form-urlencoded" in headers.get("Content-Type", ""):
        return _query_error(400, "Throttling", "Rate exceeded", None)
    return throttle_apigateway(operation, headers)


THROTTLE_ANSWERS = {
    "ec2": throttle_ec2,
    "elasticloadbalancing": throttle_elb,
    "apigateway": throttle_apigateway,
    "servicediscovery": throttle_servicediscovery,
    "logs": throttle_logs,
    "sts": throttle_sts,
}


class State:
    def __init__(self, moto):
        url = urllib.parse.urlsplit(moto)
        if url.scheme != "http" or not url.hostname:
            raise SystemExit(f"--moto must be http://HOST:PORT, not {moto!r}")
        self.moto_host, self.moto_port = url.hostname, url.port or 80
        self.lock = threading.Lock()
        self.rules = set()
        self.calls = []

    def throttled(self, service, operation):
        with self.lock:
            return (service, operation) in self.rules or (service, "*") in self.rules

    def record(self, call):
        with self.lock:
            self.calls.append(call)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state = None  # set by main

    def log_message(self, format, *args):  # quiet: tests read calls, not logs
        pass

    def do_GET(self):
        self.handle_any()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_GET

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def answer(self, status, headers, body, reason=None):
        self.send_response_only(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        # A HEAD answer keeps moto's Content-Length (that of the GET); 1xx, 204 and 304 have none.
        bodiless = self.command == "HEAD" or status < 200 or status in (204, 304)
        if not bodiless:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not bodiless:
            self.wfile.write(body)
        self.wfile.flush()

    def handle_any(self):
        body = self.read_body()
        split = urllib.parse.urlsplit(self.path)
        if split.path.startswith("/_fault/"):
            return self.control(split.path, body)
        query = urllib.parse.parse_qs(split.query)
        service = service_of(self.headers, query)
        operation = operation_of(service, self.command, split.path, query, self.headers, body)
        call = {"t": time.time(), "service": service, "operation": operation}
        if self.state.throttled(service, operation):
            status, headers, answer = THROTTLE_ANSWERS.get(service, throttle_other)(operation, self.headers)
            self.state.record({**call, "status": status, "throttled": True})
            return self.answer(status, headers, answer)
        try:
            status, reason, headers, answer = self.forward(body)
        except (OSError, http.client.HTTPException) as e:
            self.state.record({**call, "status": 502, "throttled": False})
            return self.answer(502, [("Content-Type", "text/plain")], f"moto: {e}\n".encode())
        self.state.record({**call, "status": status, "throttled": False})
        self.answer(status, headers, answer, reason)

    def forward(self, body):
        conn = http.client.HTTPConnection(self.state.moto_host, self.state.moto_port, timeout=120)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                    conn.putheader(name, value)
            if body or self.command in ("POST", "PUT", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            answer = resp.read()  # chunked answers arrive whole; sent on with a Content-Length
            headers = [(n, v) for n, v in resp.getheaders()
                       if n.lower() not in HOP_BY_HOP and (n.lower() != "content-length" or self.command == "HEAD")]
            return resp.status, resp.reason, headers, answer
        finally:
            conn.close()

    def control(self, path, body):
        state = self.state
        if path == "/_fault/throttle" and self.command == "POST":
            try:
                rules = json.loads(body or b"{}").get("rules", [])
                parsed = {(str(s), str(o)) for s, o in rules}
            except (ValueError, TypeError, AttributeError) as e:
                return self.json(400, {"error": f"expected {{\"rules\": [[service, operation], ...]}}: {e}"})
            with state.lock:
                state.rules = parsed
        elif path == "/_fault/throttle" and self.command == "GET":
            pass
        elif path == "/_fault/calls" and self.command == "GET":
            with state.lock:
                return self.json(200, list(state.calls))
        elif path == "/_fault/calls/reset" and self.command == "POST":
            with state.lock:
                state.calls = []
            return self.json(200, {})
        else:
            return self.json(404, {"error": f"no {self.command} {path}"})
        with state.lock:
            return self.json(200, {"rules": sorted(state.rules)})

    def json(self, status, value):
        self.answer(status, [("Content-Type", "application/json")], json.dumps(value).encode())


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--moto", required=True, help="moto's endpoint, http://127.0.0.1:PORT")
    ap.add_argument("--port", type=int, default=0, help="the port to listen on, 127.0.0.1 only (0: any)")
    args = ap.parse_args()
    Handler.state = State(args.moto)
    server = Server(("127.0.0.1", args.port), Handler)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
