#!/usr/bin/env python3
"""Builds, in a moto server, the shapes API Gateway users really build around private
integrations (a greedy proxy, listener rules, a POST-only route, a private API, TLS to an HTTPS
listener, stage variables, a custom domain, timeouts and access logs), reads every piece back,
and prints as JSON what was made (ids, ARNs, DNS names, listener and rule ARNs, stage names, the
requests each API answers and where they land) and where moto's answers differ from AWS's, for
a Rust test to compare what hopwatch discovers with.

    python routes.py --endpoint http://127.0.0.1:PORT [--targets 127.0.0.5,127.0.0.6]

Resets moto first (POST /moto-api/reset), as fixture.py does. --targets: the two addresses
registered as every target group's targets (port 80) and given an interface each (default
10.0.1.20 and 10.0.2.20). Every call goes to --endpoint; nothing contacts AWS.

The estate, in one VPC (10.0.0.0/16, subnets 10.0.1.0/24 and 10.0.2.0/24):

- routes-nlb: internal NLB, TCP 80 -> ip target group (HTTP health check /api/health), behind
  VPC link v1 `routes-v1`;
- routes-alb: internal ALB, HTTP 80 listener: default fixed-response 404, rule 10 path-pattern
  /prod/* -> ip target group (health check /health), rule 20 host-header other.example ->
  fixed-response 403;
- billing-alb: internal ALB, HTTPS 443 listener (an ACM certificate for
  billing.internal.example) -> ip target group (health check /health);
- VPC link v2 `routes-v2` (both subnets, link-sg) in front of both ALBs;
- an execute-api interface endpoint (private DNS off) for the private API;
- APIs: proxy, stagevars, private, domain (REST, over routes-v1) and rules, post-only, tls
  (HTTP, over routes-v2).

Printed keys: region, vpc, subnets, security_groups, enis, targets, certificates, nlb, alb,
billing_alb, links, vpc_endpoint, domain, apis (one entry per item: kind, id, name, stage,
invoke, routes, integration, requests, plus the item's own keys), moto_differs (each field moto
stores or answers otherwise than AWS: item, field, sent/aws, moto, note) and seconds.

`requests` are what AWS would do with each request: the client's method, host and path, and
either the backend it reaches (host, path, the listener and rule or target group that answers)
or who answers instead and with what status.
"""
import argparse
import ipaddress
import json
import sys
import time
import urllib.request

import boto3

REGION = "us-east-1"
ACCOUNT = "123456789012"
VPC_CIDR = "10.0.0.0/16"

ACCESS_LOG_ARN = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:proxy-access"
ACCESS_LOG_FORMAT = json.dumps({
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "requestTime": "$context.requestTime",
    "httpMethod": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "status": "$context.status",
    "responseLength": "$context.responseLength",
    "integrationStatus": "$context.integration.status",
    "integrationLatency": "$context.integration.latency",
    "errorMessage": "$context.error.message",
    "errorResponseType": "$context.error.responseType",
}, separators=(",", ":"))


class Differs:
    """Where what moto answers is not what AWS would (the sent value, unless `aws` says)."""

    def __init__(self):
        self.found = []

    def note(self, item, field, aws, moto, note):
        self.found.append({"item": item, "field": field, "aws": aws, "moto": moto, "note": note})

    def compare(self, item, where, sent, got, notes=None):
        """Every key of `sent` (recursively) against `got`."""
        notes = notes or {}

        def walk(path, s, g):
            if isinstance(s, dict) and isinstance(g, dict):
                for k, v in s.items():
                    walk(f"{path}.{k}" if path else k, v, g.get(k, _MISSING))
                return
            if s != g:
                field = f"{where}.{path}" if path else where
                moto = "(absent)" if g is _MISSING else g
                self.note(item, field, s, moto, notes.get(path) or ("moto does not store it"
                                                                   if g in (_MISSING, None) else "moto answers otherwise"))

        walk("", sent, got)


_MISSING = object()


def main():
    started = time.monotonic()
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--targets", default="10.0.1.20,10.0.2.20")
    args = ap.parse_args()
    ep = args.endpoint.rstrip("/")
    t1, t2 = args.targets.split(",")
    urllib.request.urlopen(urllib.request.Request(ep + "/moto-api/reset", method="POST")).read()

    s = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    ec2 = s.client("ec2", endpoint_url=ep)
    elb = s.client("elbv2", endpoint_url=ep)
    rest = s.client("apigateway", endpoint_url=ep)
    http = s.client("apigatewayv2", endpoint_url=ep)
    acm = s.client("acm", endpoint_url=ep)
    d = Differs()
    out = {"region": REGION}

    # ---- network ---------------------------------------------------------------------------
    vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
    sub_a = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    sub_b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24", AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]
    out.update(vpc=vpc, subnets=[sub_a, sub_b])

    def perm(port, cidr=None, ref=None):
        p = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
        if cidr:
            p["IpRanges"] = [{"CidrIp": cidr}]
        if ref:
            p["UserIdGroupPairs"] = [{"GroupId": ref}]
        return p

    sgs = {n: ec2.create_security_group(GroupName=n, Description=n, VpcId=vpc)["GroupId"]
           for n in ("link-sg", "alb-sg", "target-sg", "endpoint-sg")}
    everything = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    for n in ("link-sg", "alb-sg"):
        ec2.revoke_security_group_egress(GroupId=sgs[n], IpPermissions=everything)
    # The VPC link v2's interfaces reach the ALBs (80 and 443); the ALBs reach the targets.
    ec2.authorize_security_group_egress(GroupId=sgs["link-sg"], IpPermissions=[perm(80, ref=sgs["alb-sg"]), perm(443, ref=sgs["alb-sg"])])
    ec2.authorize_security_group_ingress(GroupId=sgs["alb-sg"], IpPermissions=[perm(80, ref=sgs["link-sg"]), perm(443, ref=sgs["link-sg"])])
    ec2.authorize_security_group_egress(GroupId=sgs["alb-sg"], IpPermissions=[perm(80, ref=sgs["target-sg"])])
    # The NLB has no security group (as most do): its ip targets see its private addresses, so
    # the targets let the VPC's CIDR in, and the ALBs' group.
    ec2.authorize_security_group_ingress(GroupId=sgs["target-sg"], IpPermissions=[perm(80, VPC_CIDR), perm(80, ref=sgs["alb-sg"])])
    # The execute-api endpoint takes HTTPS from the VPC.
    ec2.authorize_security_group_ingress(GroupId=sgs["endpoint-sg"], IpPermissions=[perm(443, VPC_CIDR)])
    out["security_groups"] = sgs

    # The targets' interfaces, in the subnet holding them (loopback addresses in the first:
    # moto does not check, and AWS never sees them).
    out["enis"] = {}
    for addr in (t1, t2):
        subnet = sub_b if ipaddress.ip_address(addr) in ipaddress.ip_network("10.0.2.0/24") else sub_a
        eni = ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress=addr, Groups=[sgs["target-sg"]])
        out["enis"][addr] = eni["NetworkInterface"]["NetworkInterfaceId"]
    out["targets"] = [t1, t2]

    # ---- certificates ----------------------------------------------------------------------
    # moto's elbv2 refuses an HTTPS listener whose certificate ACM (or IAM) does not hold, so
    # both are requested from moto's ACM (AWS would want them validated; moto does not care).
    certs = {n: acm.request_certificate(DomainName=n, ValidationMethod="DNS")["CertificateArn"]
             for n in ("billing.internal.example", "pay.example.com")}
    out["certificates"] = certs

    # ---- load balancers --------------------------------------------------------------------
    def lb(name, kind, groups=None):
        kw = dict(Name=name, Subnets=[sub_a, sub_b], Scheme="internal", Type=kind)
        if groups:
            kw["SecurityGroups"] = groups
        made = elb.create_load_balancer(**kw)["LoadBalancers"][0]
        return made["LoadBalancerArn"], made["DNSName"]

    def tg(name, protocol, health_path):
        kw = dict(Name=name, Protocol=protocol, Port=80, VpcId=vpc, TargetType="ip",
                  HealthCheckProtocol="HTTP", HealthCheckPort="traffic-port", HealthCheckPath=health_path)
        arn = elb.create_target_group(**kw)["TargetGroups"][0]["TargetGroupArn"]
        elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": t1, "Port": 80}, {"Id": t2, "Port": 80}])
        got = elb.describe_target_groups(TargetGroupArns=[arn])["TargetGroups"][0]
        d.compare(name, "target_group", {k: v for k, v in kw.items() if k != "Name"}, got)
        registered = sorted((t["Target"]["Id"], t["Target"]["Port"])
                            for t in elb.describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"])
        if registered != sorted([(t1, 80), (t2, 80)]):
            d.note(name, "describe_target_health", [[t1, 80], [t2, 80]], registered, "moto answers otherwise")
        return arn

    def forward(tg_arn):
        return {"Type": "forward", "TargetGroupArn": tg_arn}

    def fixed(status, body):
        return {"Type": "fixed-response",
                "FixedResponseConfig": {"StatusCode": status, "ContentType": "text/plain", "MessageBody": body}}

    def listener(item, lb_arn, protocol, port, action, **kw):
        made = elb.create_listener(LoadBalancerArn=lb_arn, Protocol=protocol, Port=port,
                                   DefaultActions=[action], **kw)["Listeners"][0]
        got = elb.describe_listeners(ListenerArns=[made["ListenerArn"]])["Listeners"][0]
        d.compare(item, "listener", {"Protocol": protocol, "Port": port, **kw}, got)
        got_action = (got.get("DefaultActions") or [{}])[0]
        d.compare(item, "listener.DefaultActions[0]", action, got_action)
        return made["ListenerArn"]

    def rule(item, listener_arn, priority, condition, action):
        arn = elb.create_rule(ListenerArn=listener_arn, Priority=priority, Conditions=[condition],
                              Actions=[action])["Rules"][0]["RuleArn"]
        got = elb.describe_rules(RuleArns=[arn])["Rules"][0]
        d.compare(item, f"rule {priority}", {"Priority": str(priority)}, got)
        d.compare(item, f"rule {priority}.Conditions[0]", condition, (got.get("Conditions") or [{}])[0])
        d.compare(item, f"rule {priority}.Actions[0]", action, (got.get("Actions") or [{}])[0])
        return arn

    # 1. NLB -> ip targets, health check /api/health.
    nlb, nlb_dns = lb("routes-nlb", "network")
    nlb_tg = tg("routes-nlb-ip", "TCP", "/api/health")
    nlb_listener = listener("nlb", nlb, "TCP", 80, forward(nlb_tg))
    out["nlb"] = {"name": "routes-nlb", "arn": nlb, "dns": nlb_dns, "tg": nlb_tg, "listener": nlb_listener,
                  "health_check_path": "/api/health"}

    # 3. ALB: default 404; rule 10 /prod/* -> targets; rule 20 host other.example -> 403.
    alb, alb_dns = lb("routes-alb", "application", [sgs["alb-sg"]])
    alb_tg = tg("routes-alb-ip", "HTTP", "/health")
    alb_listener = listener("rules", alb, "HTTP", 80, fixed("404", "no route"))
    rule_prod = rule("rules", alb_listener, 10,
                     {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/prod/*"]}}, forward(alb_tg))
    rule_host = rule("rules", alb_listener, 20,
                     {"Field": "host-header", "HostHeaderConfig": {"Values": ["other.example"]}},
                     fixed("403", "forbidden"))
    out["alb"] = {"name": "routes-alb", "arn": alb, "dns": alb_dns, "tg": alb_tg, "listener": alb_listener,
                  "default_action": {"type": "fixed-response", "status": 404},
                  "rules": {"prod_path": {"arn": rule_prod, "priority": 10, "path_pattern": "/prod/*", "forward": alb_tg},
                            "other_host": {"arn": rule_host, "priority": 20, "host_header": "other.example",
                                           "fixed_response": 403}},
                  "health_check_path": "/health"}

    # 6. The billing ALB: HTTPS 443 (TLS ends there) -> targets on 80.
    billing, billing_dns = lb("billing-alb", "application", [sgs["alb-sg"]])
    billing_tg = tg("billing-ip", "HTTP", "/health")
    billing_listener = listener("tls", billing, "HTTPS", 443, forward(billing_tg),
                                SslPolicy="ELBSecurityPolicy-TLS13-1-2-2021-06",
                                Certificates=[{"CertificateArn": certs["billing.internal.example"]}])
    out["billing_alb"] = {"name": "billing-alb", "arn": billing, "dns": billing_dns, "tg": billing_tg,
                          "listener": billing_listener, "port": 443,
                          "certificate": certs["billing.internal.example"], "health_check_path": "/health"}

    # What AWS names and answers that moto does not (checked, so a newer moto that fixes one
    # drops out of moto_differs).
    for item, arn, kind in (("nlb", nlb, "net"), ("rules", alb, "app"), ("tls", billing, "app")):
        if f":loadbalancer/{kind}/" not in arn:
            d.note(item, "LoadBalancerArn", f"…:loadbalancer/{kind}/NAME/ID", arn,
                   "moto writes loadbalancer/app/ for every type (listener and rule ARNs follow)")
    for item, dns, aws in (("nlb", nlb_dns, "routes-nlb-<id>.elb.us-east-1.amazonaws.com"),
                           ("rules", alb_dns, "internal-routes-alb-<id>.us-east-1.elb.amazonaws.com"),
                           ("tls", billing_dns, "internal-billing-alb-<id>.us-east-1.elb.amazonaws.com")):
        if dns.endswith("-1.us-east-1.elb.amazonaws.com"):
            d.note(item, "DNSName", aws, dns, "moto names every load balancer NAME-1.REGION.elb.amazonaws.com")
    for item, arn in (("nlb", nlb_listener), ("rules", alb_listener)):
        policy = elb.describe_listeners(ListenerArns=[arn])["Listeners"][0].get("SslPolicy")
        if policy:
            d.note(item, "listener.SslPolicy", "(absent: not a TLS/HTTPS listener)", policy, "moto answers otherwise")
    default_rule = [r for r in elb.describe_rules(ListenerArn=alb_listener)["Rules"] if r.get("IsDefault")]
    if not default_rule:
        d.note("rules", "describe_rules default rule", "the listener's default rule (IsDefault, Priority default)",
               "(absent)", "moto does not list it")
    else:
        out["alb"]["default_rule"] = default_rule[0]["RuleArn"]
    states = sorted({t["TargetHealth"]["State"] for t in elb.describe_target_health(TargetGroupArn=nlb_tg)["TargetHealthDescriptions"]})
    if states != ["initial"]:
        d.note("nlb", "describe_target_health.State", "initial, then what the health checks find", states,
               "moto answers healthy at once, and never checks")

    # ---- VPC links -------------------------------------------------------------------------
    v1 = rest.create_vpc_link(name="routes-v1", targetArns=[nlb])
    got = rest.get_vpc_link(vpcLinkId=v1["id"])
    d.compare("links", "v1", {"name": "routes-v1", "targetArns": [nlb]}, got)
    if got.get("status") == "AVAILABLE":
        d.note("links", "v1.status", "PENDING for minutes, then AVAILABLE", got.get("status"),
               "moto's link is AVAILABLE at once (so is the v2 link's VpcLinkStatus)")
    v2_kw = dict(Name="routes-v2", SubnetIds=[sub_a, sub_b], SecurityGroupIds=[sgs["link-sg"]])
    v2 = http.create_vpc_link(**v2_kw)["VpcLinkId"]
    d.compare("links", "v2", v2_kw, http.get_vpc_link(VpcLinkId=v2))
    out["links"] = {"v1": v1["id"], "v1_target": nlb, "v2": v2, "v2_subnets": [sub_a, sub_b],
                    "v2_security_groups": [sgs["link-sg"]]}

    # ---- the execute-api interface endpoint (5) ----------------------------------------------
    vpce_kw = dict(VpcEndpointType="Interface", VpcId=vpc, ServiceName=f"com.amazonaws.{REGION}.execute-api",
                   SubnetIds=[sub_a, sub_b], SecurityGroupIds=[sgs["endpoint-sg"]], PrivateDnsEnabled=False)
    vpce = ec2.create_vpc_endpoint(**vpce_kw)["VpcEndpoint"]["VpcEndpointId"]
    got = ec2.describe_vpc_endpoints(VpcEndpointIds=[vpce])["VpcEndpoints"][0]
    d.compare("private", "vpc_endpoint", {k: v for k, v in vpce_kw.items() if k != "SecurityGroupIds"}, got)
    got_groups = [g.get("GroupId") for g in got.get("Groups", [])]
    if got_groups != [sgs["endpoint-sg"]]:
        d.note("private", "vpc_endpoint.Groups", [sgs["endpoint-sg"]], got_groups, "moto answers otherwise")
    dns_entries = got.get("DnsEntries", [])
    # AWS names an execute-api endpoint vpce-<id>-<rand>.execute-api.<region>.vpce.amazonaws.com
    # (one regional entry, then one per AZ: vpce-<id>-<rand>-<az>.execute-api...).
    aws_suffix = f".execute-api.{REGION}.vpce.amazonaws.com"
    if not dns_entries or not all(e.get("DnsName", "").endswith(aws_suffix) for e in dns_entries) or len(dns_entries) != 3:
        d.note("private", "vpc_endpoint.DnsEntries",
               f"3 entries (regional + one per AZ), vpce-<id>-<rand>[-<az>]{aws_suffix}",
               dns_entries, "moto names it <vpce-id>-<rand>.<service name>, one entry")
    out["vpc_endpoint"] = {"id": vpce, "service": vpce_kw["ServiceName"], "dns_entries": dns_entries,
                           "private_dns_enabled": got.get("PrivateDnsEnabled"), "security_groups": [sgs["endpoint-sg"]],
                           "subnets": [sub_a, sub_b]}

    # ---- REST APIs -------------------------------------------------------------------------
    def rest_method(item, api, parent, path_part, method, integration, method_params=None):
        res = rest.create_resource(restApiId=api, parentId=parent, pathPart=path_part)["id"]
        kw = dict(restApiId=api, resourceId=res, httpMethod=method, authorizationType="NONE")
        if method_params:
            kw["requestParameters"] = method_params
        rest.put_method(**kw)
        got = rest.get_method(restApiId=api, resourceId=res, httpMethod=method)
        d.compare(item, f"{method} method", {k: v for k, v in kw.items() if k not in ("restApiId", "resourceId")}, got)
        put = dict(restApiId=api, resourceId=res, httpMethod=method, **integration)
        rest.put_integration(**put)
        got = rest.get_integration(restApiId=api, resourceId=res, httpMethod=method)
        # What AWS answers: each sent field (integrationHttpMethod as httpMethod), and the
        # defaults it fills in for fields not sent.
        aws = {"timeoutInMillis": 29000, "passthroughBehavior": "WHEN_NO_MATCH", "cacheNamespace": res}
        aws.update({("httpMethod" if k == "integrationHttpMethod" else k): v for k, v in integration.items()})
        default = "AWS's default; moto leaves it out"
        d.compare(item, f"{method} integration", aws, got, notes={
            "connectionId": "moto's put_integration drops connectionId (its Integration has no such field, "
                            "and moto has no update_integration to set it later): no workaround exists",
            "timeoutInMillis": default if "timeoutInMillis" not in integration else None,
            "passthroughBehavior": default,
            "cacheNamespace": "AWS's default (the resource id); moto leaves it out",
        })
        return res

    def v1_integration(uri, **kw):
        return dict(type="HTTP_PROXY", integrationHttpMethod=kw.pop("method", "GET"), uri=uri,
                    connectionType="VPC_LINK", connectionId=kw.pop("link", v1["id"]), **kw)

    def rest_stage(item, api, stage, variables=None):
        kw = dict(restApiId=api, stageName=stage)
        if variables:
            kw["variables"] = variables
        rest.create_deployment(**kw)
        got = rest.get_stage(restApiId=api, stageName=stage)
        d.compare(item, "stage", {"stageName": stage, **({"variables": variables} if variables else {})}, got)
        return got

    def rest_api(item, name, **kw):
        made = rest.create_rest_api(name=name, **kw)
        got = rest.get_rest_api(restApiId=made["id"])
        d.compare(item, "rest_api", kw, got)
        return made["id"], made["rootResourceId"]

    def execute_api(api_id):
        return f"{api_id}.execute-api.{REGION}.amazonaws.com"

    apis = {}

    # 2 + 9. proxy: ANY /{proxy+} only (no method on /), to /api/{proxy} on the NLB, 12 s
    # timeout; prod with access logs (JSON) and execution logs at INFO.
    proxy, proxy_root = rest_api("proxy", "proxy", endpointConfiguration={"types": ["REGIONAL"]})
    proxy_res = rest_method("proxy", proxy, proxy_root, "{proxy+}", "ANY",
                            v1_integration(f"http://{nlb_dns}/api/{{proxy}}", method="ANY",
                                           requestParameters={"integration.request.path.proxy": "method.request.path.proxy"},
                                           timeoutInMillis=12000),
                            method_params={"method.request.path.proxy": True})
    rest_stage("proxy", proxy, "prod")
    rest.update_stage(restApiId=proxy, stageName="prod", patchOperations=[
        {"op": "replace", "path": "/accessLogSettings/destinationArn", "value": ACCESS_LOG_ARN},
        {"op": "replace", "path": "/accessLogSettings/format", "value": ACCESS_LOG_FORMAT},
        {"op": "replace", "path": "/*/*/logging/loglevel", "value": "INFO"},
    ])
    got = rest.get_stage(restApiId=proxy, stageName="prod")
    d.compare("proxy", "stage", {"accessLogSettings": {"destinationArn": ACCESS_LOG_ARN, "format": ACCESS_LOG_FORMAT},
                                 "methodSettings": {"*/*": {"loggingLevel": "INFO"}}}, got)
    settings = got.get("methodSettings", {}).get("*/*", {})
    if (settings.get("throttlingBurstLimit"), settings.get("throttlingRateLimit")) != (5000, 10000.0):
        d.note("proxy", "stage.methodSettings.*/*.throttling",
               "the account's limits (5000 burst, 10000.0 rate unless lowered)",
               [settings.get("throttlingBurstLimit"), settings.get("throttlingRateLimit")],
               "moto fills its own defaults into a method setting")
    resources = rest.get_resources(restApiId=proxy, embed=["methods"])["items"]
    root_methods = [r.get("resourceMethods") for r in resources if r["path"] == "/"]
    if root_methods != [None] and root_methods != [{}]:
        d.note("proxy", "root.resourceMethods", None, root_methods, "moto answers otherwise")
    proxy_host = execute_api(proxy)
    apis["proxy"] = {
        "kind": "rest", "id": proxy, "name": "proxy", "stage": "prod", "invoke": f"https://{proxy_host}/prod",
        "root_resource": proxy_root, "resource": proxy_res,
        "routes": [{"method": "ANY", "path": "/{proxy+}"}],
        "integration": {"type": "HTTP_PROXY", "connection_type": "VPC_LINK", "link": v1["id"],
                        "uri": f"http://{nlb_dns}/api/{{proxy}}", "timeout_ms": 12000,
                        "request_parameters": {"integration.request.path.proxy": "method.request.path.proxy"}},
        "access_log": {"destination": ACCESS_LOG_ARN, "format": ACCESS_LOG_FORMAT},
        "execution_log_level": "INFO",
        "requests": [
            {"method": "GET", "host": proxy_host, "path": "/prod/health",
             "backend": {"host": nlb_dns, "path": "/api/health", "listener": nlb_listener, "tg": nlb_tg}},
            {"method": "POST", "host": proxy_host, "path": "/prod/orders/42",
             "backend": {"host": nlb_dns, "path": "/api/orders/42", "listener": nlb_listener, "tg": nlb_tg}},
            # No method on / : API Gateway answers itself (MISSING_AUTHENTICATION_TOKEN).
            {"method": "GET", "host": proxy_host, "path": "/prod/",
             "answered_by": "apigateway", "status": 403, "response_type": "MISSING_AUTHENTICATION_TOKEN"},
        ],
    }

    # 5. private: a PRIVATE REST API reachable only through the execute-api endpoint. AWS will
    # not deploy a private API without a resource policy, so it has the usual one.
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "execute-api:Invoke", "Resource": "execute-api:/*"},
        {"Effect": "Deny", "Principal": "*", "Action": "execute-api:Invoke", "Resource": "execute-api:/*",
         "Condition": {"StringNotEquals": {"aws:SourceVpce": vpce}}}]})
    private, private_root = rest_api("private", "private",
                                     endpointConfiguration={"types": ["PRIVATE"], "vpcEndpointIds": [vpce]},
                                     policy=policy)
    if rest.get_rest_api(restApiId=private).get("policy") == policy:
        d.note("private", "rest_api.policy",
               "the policy with execute-api:/* expanded to arn:aws:execute-api:REGION:ACCOUNT:API/*, its quotes "
               "backslash-escaped", "(verbatim as sent)", "moto answers it as sent")
    private_res = rest_method("private", private, private_root, "orders", "GET",
                              v1_integration(f"http://{nlb_dns}/orders"))
    rest_stage("private", private, "prod")
    private_host = execute_api(private)
    apis["private"] = {
        "kind": "rest", "id": private, "name": "private", "stage": "prod", "invoke": f"https://{private_host}/prod",
        "endpoint_type": "PRIVATE", "vpc_endpoint_ids": [vpce], "policy": policy, "resource": private_res,
        "routes": [{"method": "GET", "path": "/orders"}],
        "integration": {"type": "HTTP_PROXY", "connection_type": "VPC_LINK", "link": v1["id"],
                        "uri": f"http://{nlb_dns}/orders"},
        # Private DNS is off: clients call the Route 53 alias AWS gives each API for an
        # endpoint in its vpcEndpointIds, https://{rest-api-id}-{vpce-id}.execute-api.{region}.amazonaws.com/{stage}
        # (apigateway-private-api-test-invoke-url.html; no ".vpce." in it), or the endpoint's
        # own DNS name with Host (or x-apigw-api-id) naming the API.
        "requests": [
            {"method": "GET", "host": f"{private}-{vpce}.execute-api.{REGION}.amazonaws.com", "path": "/prod/orders",
             "via_vpc_endpoint": vpce,
             "backend": {"host": nlb_dns, "path": "/orders", "listener": nlb_listener, "tg": nlb_tg}},
            {"method": "GET", "host": private_host, "path": "/prod/orders", "from": "outside the VPC endpoint",
             "answered_by": "apigateway", "status": 403},
        ],
    }

    # 7. stagevars: the integration's host and link are both the stage's variables.
    stagevars, stagevars_root = rest_api("stagevars", "stagevars", endpointConfiguration={"types": ["REGIONAL"]})
    stagevars_res = rest_method("stagevars", stagevars, stagevars_root, "items", "GET",
                                v1_integration("http://${stageVariables.backend}/items", link="${stageVariables.link}"))
    rest_stage("stagevars", stagevars, "prod", variables={"backend": nlb_dns, "link": v1["id"]})
    stagevars_host = execute_api(stagevars)
    apis["stagevars"] = {
        "kind": "rest", "id": stagevars, "name": "stagevars", "stage": "prod", "invoke": f"https://{stagevars_host}/prod",
        "resource": stagevars_res, "routes": [{"method": "GET", "path": "/items"}],
        "integration": {"type": "HTTP_PROXY", "connection_type": "VPC_LINK", "link": "${stageVariables.link}",
                        "uri": "http://${stageVariables.backend}/items"},
        "stage_variables": {"backend": nlb_dns, "link": v1["id"]},
        "resolved": {"link": v1["id"], "uri": f"http://{nlb_dns}/items"},
        "requests": [{"method": "GET", "host": stagevars_host, "path": "/prod/items",
                      "backend": {"host": nlb_dns, "path": "/items", "listener": nlb_listener, "tg": nlb_tg}}],
    }

    # 8. domain: the execute-api endpoint off; only pay.example.com/payments reaches it.
    domain, domain_root = rest_api("domain", "domain", endpointConfiguration={"types": ["REGIONAL"]},
                                   disableExecuteApiEndpoint=True)
    domain_res = rest_method("domain", domain, domain_root, "pay", "GET", v1_integration(f"http://{nlb_dns}/pay"))
    rest_stage("domain", domain, "prod")
    dn_kw = dict(domainName="pay.example.com", regionalCertificateArn=certs["pay.example.com"],
                 endpointConfiguration={"types": ["REGIONAL"]}, securityPolicy="TLS_1_2")
    dn = rest.create_domain_name(**dn_kw)
    got = rest.get_domain_name(domainName="pay.example.com")
    d.compare("domain", "domain_name", dn_kw, got)
    if got.get("distributionDomainName"):
        d.note("domain", "domain_name.distributionDomainName", "(absent: a REGIONAL domain has no CloudFront distribution)",
               got["distributionDomainName"], "moto answers one for every domain")
    rest.create_base_path_mapping(domainName="pay.example.com", basePath="payments", restApiId=domain, stage="prod")
    got = rest.get_base_path_mappings(domainName="pay.example.com").get("items", [])
    d.compare("domain", "base_path_mapping", {"basePath": "payments", "restApiId": domain, "stage": "prod"},
              got[0] if got else {})
    domain_host = execute_api(domain)
    out["domain"] = {"name": "pay.example.com", "regional_domain_name": dn.get("regionalDomainName"),
                     "regional_hosted_zone_id": dn.get("regionalHostedZoneId"),
                     "certificate": certs["pay.example.com"],
                     "mappings": [{"base_path": "payments", "api": domain, "stage": "prod"}]}
    apis["domain"] = {
        "kind": "rest", "id": domain, "name": "domain", "stage": "prod", "invoke": "https://pay.example.com/payments",
        "disable_execute_api_endpoint": True, "custom_domain": "pay.example.com", "base_path": "payments",
        "resource": domain_res, "routes": [{"method": "GET", "path": "/pay"}],
        "integration": {"type": "HTTP_PROXY", "connection_type": "VPC_LINK", "link": v1["id"],
                        "uri": f"http://{nlb_dns}/pay"},
        "requests": [
            {"method": "GET", "host": "pay.example.com", "path": "/payments/pay",
             "backend": {"host": nlb_dns, "path": "/pay", "listener": nlb_listener, "tg": nlb_tg}},
            {"method": "GET", "host": domain_host, "path": "/prod/pay",
             "answered_by": "apigateway", "status": 403, "why": "disableExecuteApiEndpoint"},
        ],
    }

    # ---- HTTP APIs -------------------------------------------------------------------------
    def http_api(item, name, route, listener_arn, stage, tls=None):
        api = http.create_api(Name=name, ProtocolType="HTTP")
        kw = dict(IntegrationType="HTTP_PROXY", IntegrationMethod="ANY", ConnectionType="VPC_LINK",
                  ConnectionId=v2, IntegrationUri=listener_arn, PayloadFormatVersion="1.0")
        if tls:
            kw["TlsConfig"] = tls
        integration = http.create_integration(ApiId=api["ApiId"], **kw)["IntegrationId"]
        d.compare(item, "integration", kw, http.get_integration(ApiId=api["ApiId"], IntegrationId=integration))
        route_id = http.create_route(ApiId=api["ApiId"], RouteKey=route, Target=f"integrations/{integration}")["RouteId"]
        routes = http.get_routes(ApiId=api["ApiId"])["Items"]
        got = [(r["RouteKey"], r.get("Target")) for r in routes]
        if got != [(route, f"integrations/{integration}")]:
            d.note(item, "routes", [[route, f"integrations/{integration}"]], got, "moto answers otherwise")
        http.create_stage(ApiId=api["ApiId"], StageName=stage, AutoDeploy=True)
        got = http.get_stage(ApiId=api["ApiId"], StageName=stage)
        d.compare(item, "stage", {"StageName": stage, "AutoDeploy": True}, got)
        if not got.get("DeploymentId"):
            try:
                deployments = len(http.get_deployments(ApiId=api["ApiId"]).get("Items", []))
            except http.exceptions.ClientError as e:
                deployments = f"GetDeployments: {e.response['Error'].get('Code')}"
            d.note(item, "stage.DeploymentId", "the auto-deployment's id (and LastDeploymentStatusMessage)",
                   f"(absent); deployments: {deployments}", "moto's apigatewayv2 makes no deployments")
        host = api["ApiEndpoint"].split("://", 1)[-1]
        if host != execute_api(api["ApiId"]):
            d.note(item, "ApiEndpoint", f"https://{execute_api(api['ApiId'])}", api["ApiEndpoint"], "moto answers otherwise")
        base = api["ApiEndpoint"] if stage == "$default" else f"{api['ApiEndpoint']}/{stage}"
        return {"kind": "http", "id": api["ApiId"], "name": name, "stage": stage, "endpoint": api["ApiEndpoint"],
                "invoke": base, "routes": [{"key": route, "id": route_id, "integration": integration}],
                "integration": {"id": integration, "type": "HTTP_PROXY", "connection_type": "VPC_LINK", "link": v2,
                                "uri": listener_arn, **({"tls_server_name": tls["ServerNameToVerify"]} if tls else {})}}, host

    # 3. rules: GET /orders on stage prod. For private integrations API Gateway includes the
    # stage in the path it sends (docs: http-api-develop-integrations-private, "a request to the
    # test stage of an API includes test/route-path"): /prod/orders reaches the ALB, which is
    # why its rule is /prod/*.
    apis["rules"], host = http_api("rules", "rules", "GET /orders", alb_listener, "prod")
    apis["rules"]["requests"] = [
        {"method": "GET", "host": host, "path": "/prod/orders",
         "backend": {"host": alb_dns, "path": "/prod/orders", "listener": alb_listener, "rule": rule_prod, "tg": alb_tg}},
        {"method": "POST", "host": host, "path": "/prod/orders",
         "answered_by": "apigateway", "status": 404, "why": "no route"},
    ]

    # 4. post-only: POST /orders on $default, to the same listener: /orders matches no rule.
    apis["post-only"], host = http_api("post-only", "post-only", "POST /orders", alb_listener, "$default")
    apis["post-only"]["requests"] = [
        {"method": "POST", "host": host, "path": "/orders",
         "backend": {"host": alb_dns, "path": "/orders", "listener": alb_listener,
                     "rule": out["alb"].get("default_rule", "default")},
         "answered_by": "alb", "status": 404, "why": "the listener's default fixed-response"},
        {"method": "GET", "host": host, "path": "/orders", "answered_by": "apigateway", "status": 404, "why": "no route"},
    ]

    # 6. tls: GET /bill to the HTTPS listener, verifying billing.internal.example.
    apis["tls"], host = http_api("tls", "tls", "GET /bill", billing_listener, "$default",
                                 tls={"ServerNameToVerify": "billing.internal.example"})
    apis["tls"]["requests"] = [
        {"method": "GET", "host": host, "path": "/bill",
         "backend": {"host": billing_dns, "port": 443, "scheme": "https", "sni": "billing.internal.example",
                     "path": "/bill", "listener": billing_listener, "tg": billing_tg}},
    ]

    out["apis"] = apis
    out["moto_differs"] = d.found
    out["seconds"] = round(time.monotonic() - started, 3)
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
