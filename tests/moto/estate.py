#!/usr/bin/env python3
"""Builds a large estate of private integrations in a moto server, quickly, and prints what was
made as JSON: discovery at scale (paging, pacing under API Gateway's quotas, throttling) is
tested against it.

    python estate.py --endpoint http://127.0.0.1:PORT --apis N [--targets 127.0.0.5,127.0.0.6]

Resets moto first (POST /moto-api/reset), as fixture.py does. Then, in one VPC (10.0.0.0/16,
two subnets):

- six internal load balancers, each with one target group of ip targets (the --targets
  addresses, port 80; default 10.0.1.20 and 10.0.2.20, an interface each) and one listener on
  80: nlb-1..3 behind the three VPC links v1 (one NLB each); alb-1, alb-2 and nlb-4 reached
  through two VPC links v2 (two subnets, one security group each);
- N APIs, 60 % REST and 40 % HTTP, APIs alternating over the links:
  - a REST API has /svc<i> and 2-4 resources under it, each with one method (GET, or ANY on
    a {proxy+} resource, which every third API has) and an HTTP_PROXY integration over
    VPC_LINK to http://<NLB DNS>/svc<i>/...; every fourth REST API goes through a VPC link v2
    to an ALB instead (connectionId the link, integrationTarget the ALB, as T3); 1-3 stages
    (prod, staging, dev), each made by its own deployment;
  - an HTTP API has 2-4 routes (GET /svc<i>/r<k>, and ANY /svc<i>/{proxy+} on every third),
    each with its own HTTP_PROXY integration over a VPC link v2 to a listener's ARN; 1-3
    stages ($default, prod, staging), auto-deployed.

What moto keeps of this differs from AWS in two ways: a REST integration's connectionId and
integrationTarget are not stored (moto's put_integration drops them), and apigatewayv2 has no
deployments in moto (its stages exist; nothing is deployed).

Each API's shape follows from its index, so one N always builds the same estate (ids aside).
One boto3 client per service, one call at a time, no waits: about 12 calls per API, ~4 ms each
against a local moto.
"""
import argparse
import json
import sys
import time
import urllib.request

import boto3

REGION = "us-east-1"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--apis", type=int, required=True)
    ap.add_argument("--targets", default="10.0.1.20,10.0.2.20")
    args = ap.parse_args()
    started = time.monotonic()
    ep = args.endpoint.rstrip("/")
    targets = [t for t in args.targets.split(",") if t]
    urllib.request.urlopen(urllib.request.Request(ep + "/moto-api/reset", method="POST")).read()

    s = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    ec2 = s.client("ec2", endpoint_url=ep)
    elb = s.client("elbv2", endpoint_url=ep)
    rest = s.client("apigateway", endpoint_url=ep)
    http = s.client("apigatewayv2", endpoint_url=ep)

    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{k}.0/24", AvailabilityZone=f"{REGION}{az}")["Subnet"]["SubnetId"]
               for k, az in ((1, "a"), (2, "b"))]

    def group(name):
        return ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc)["GroupId"]

    sgs = {n: group(n) for n in ("estate-link-a", "estate-link-b", "estate-alb", "estate-targets")}
    for addr in targets:
        ec2.create_network_interface(SubnetId=subnets[0], PrivateIpAddress=addr, Groups=[sgs["estate-targets"]])

    lbs = {}
    listeners = 0
    for name, kind in (("nlb-1", "network"), ("nlb-2", "network"), ("nlb-3", "network"),
                       ("alb-1", "application"), ("alb-2", "application"), ("nlb-4", "network")):
        kw = dict(Name=f"estate-{name}", Subnets=subnets, Scheme="internal", Type=kind)
        if kind == "application":
            kw["SecurityGroups"] = [sgs["estate-alb"]]
        made = elb.create_load_balancer(**kw)["LoadBalancers"][0]
        protocol = "HTTP" if kind == "application" else "TCP"
        tg = elb.create_target_group(Name=f"estate-{name}-tg", Protocol=protocol, Port=80, VpcId=vpc,
                                     TargetType="ip")["TargetGroups"][0]["TargetGroupArn"]
        elb.register_targets(TargetGroupArn=tg, Targets=[{"Id": t, "Port": 80} for t in targets])
        listener = elb.create_listener(LoadBalancerArn=made["LoadBalancerArn"], Protocol=protocol, Port=80,
                                       DefaultActions=[{"Type": "forward", "TargetGroupArn": tg}])["Listeners"][0]["ListenerArn"]
        listeners += 1
        lbs[name] = {"arn": made["LoadBalancerArn"], "dns": made["DNSName"], "tg": tg, "listener": listener}

    v1_links = [(rest.create_vpc_link(name=f"estate-link-{k}", targetArns=[lbs[f"nlb-{k}"]["arn"]])["id"], lbs[f"nlb-{k}"])
                for k in (1, 2, 3)]
    v2_links = [http.create_vpc_link(Name=f"estate-v2-link-{k}", SubnetIds=subnets,
                                     SecurityGroupIds=[sgs[f"estate-link-{k}"]])["VpcLinkId"] for k in ("a", "b")]
    v2_lbs = [lbs["alb-1"], lbs["alb-2"], lbs["nlb-4"]]

    counts = {"rest_apis": 0, "http_apis": 0, "stages": 0, "resources": 0, "routes": 0, "integrations": 0}
    rest_ids, http_ids, api_ids = [], [], []

    def rest_api(i, j):
        api = rest.create_rest_api(name=f"estate-rest-{i:04d}", endpointConfiguration={"types": ["REGIONAL"]})
        api_id = api["id"]
        svc = rest.create_resource(restApiId=api_id, parentId=api["rootResourceId"], pathPart=f"svc{i}")["id"]
        n = 2 + i % 3
        proxy = i % 3 == 0
        if j % 4 == 3:  # through a VPC link v2 to an ALB
            alb = v2_lbs[j % 2]
            link = dict(connectionId=v2_links[j % 2], integrationTarget=alb["arn"])
            host = alb["dns"]
        else:
            link_id, nlb = v1_links[j % 3]
            link = dict(connectionId=link_id)
            host = nlb["dns"]
        for k in range(n):
            last_proxy = proxy and k == n - 1
            part = "{proxy+}" if last_proxy else f"r{k}"
            res = rest.create_resource(restApiId=api_id, parentId=svc, pathPart=part)["id"]
            method = "ANY" if last_proxy else "GET"
            kw = dict(restApiId=api_id, resourceId=res, httpMethod=method, authorizationType="NONE")
            ikw = dict(restApiId=api_id, resourceId=res, httpMethod=method, type="HTTP_PROXY", integrationHttpMethod=method,
                       uri=f"http://{host}/svc{i}/{'{proxy}' if last_proxy else part}", connectionType="VPC_LINK", **link)
            if last_proxy:
                kw["requestParameters"] = {"method.request.path.proxy": True}
                ikw["requestParameters"] = {"integration.request.path.proxy": "method.request.path.proxy"}
            rest.put_method(**kw)
            rest.put_integration(**ikw)
        stages = ("prod", "staging", "dev")[: 1 + i % 3]
        for stage in stages:
            rest.create_deployment(restApiId=api_id, stageName=stage, description=f"{stage} of estate-rest-{i:04d}")
        counts["rest_apis"] += 1
        counts["resources"] += n
        counts["integrations"] += n
        counts["stages"] += len(stages)
        rest_ids.append(api_id)
        return api_id

    def http_api(i, j):
        api_id = http.create_api(Name=f"estate-http-{i:04d}", ProtocolType="HTTP")["ApiId"]
        link = v2_links[j % 2]
        listener = v2_lbs[j % 3]["listener"]
        n = 2 + i % 3
        for k in range(n):
            route = f"ANY /svc{i}/{{proxy+}}" if i % 3 == 0 and k == n - 1 else f"GET /svc{i}/r{k}"
            integration = http.create_integration(ApiId=api_id, IntegrationType="HTTP_PROXY", IntegrationMethod="ANY",
                                                  ConnectionType="VPC_LINK", ConnectionId=link, IntegrationUri=listener,
                                                  PayloadFormatVersion="1.0")["IntegrationId"]
            http.create_route(ApiId=api_id, RouteKey=route, Target=f"integrations/{integration}")
        stages = ("$default", "prod", "staging")[: 1 + i % 3]
        for stage in stages:
            http.create_stage(ApiId=api_id, StageName=stage, AutoDeploy=True)
        counts["http_apis"] += 1
        counts["routes"] += n
        counts["integrations"] += n
        counts["stages"] += len(stages)
        http_ids.append(api_id)
        return api_id

    for i in range(args.apis):
        if i % 5 < 3:
            api_ids.append(rest_api(i, counts["rest_apis"]))
        else:
            api_ids.append(http_api(i, counts["http_apis"]))

    out = {
        "region": REGION,
        "apis": len(api_ids),
        **counts,
        "vpc_links": {"v1": [l for l, _ in v1_links], "v2": v2_links},
        "load_balancers": len(lbs),
        "listeners": listeners,
        "target_groups": len(lbs),
        "targets": targets,
        "lbs": lbs,
        "vpc": vpc,
        "subnets": subnets,
        "security_groups": sgs,
        "api_ids": api_ids,
        "rest_api_ids": rest_ids,
        "http_api_ids": http_ids,
        "seconds": round(time.monotonic() - started, 2),
    }
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
