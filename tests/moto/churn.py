#!/usr/bin/env python3
"""Churns an estate that tests/moto/fixture.py built, in a moto server, until killed: what
accounts whose APIs come and go look like (preview stages, CI environments).

    python churn.py --endpoint http://127.0.0.1:PORT [--apis 10] [--period 3]

Every period:
- ten REST APIs are created (a resource, GET through the T1 VPC link to its NLB, a deployment
  to stage prod) and the previous period's ten are deleted;
- the `orders` API gains or loses a stage `preview`;
- the second target of the T1 target group is deregistered or registered again;
- target-sg's rule for agent-sg on port 80 is revoked or authorized again.

Prints one JSON line per period: {"period": n, "created": [...], "deleted": [...]}. The ids
of the APIs alive when it is killed are the last line's "created".
"""
import argparse
import json
import sys
import time

import boto3

REGION = "us-east-1"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--apis", type=int, default=10)
    ap.add_argument("--period", type=float, default=3.0)
    args = ap.parse_args()
    ep = args.endpoint.rstrip("/")
    s = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)
    ec2 = s.client("ec2", endpoint_url=ep)
    elb = s.client("elbv2", endpoint_url=ep)
    rest = s.client("apigateway", endpoint_url=ep)

    nlb = next(lb for lb in elb.describe_load_balancers()["LoadBalancers"] if lb["LoadBalancerName"] == "t1-nlb")
    link = next(l for l in rest.get_vpc_links()["items"] if l["name"] == "t1-link")["id"]
    tg = next(t for t in elb.describe_target_groups()["TargetGroups"] if t["TargetGroupName"] == "t1-targets")
    targets = [d["Target"] for d in elb.describe_target_health(TargetGroupArn=tg["TargetGroupArn"])["TargetHealthDescriptions"]]
    orders = next(a for a in rest.get_rest_apis()["items"] if a["name"] == "orders")["id"]
    groups = {g["GroupName"]: g["GroupId"] for g in ec2.describe_security_groups()["SecurityGroups"]}
    rule = [{"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
             "UserIdGroupPairs": [{"GroupId": groups["agent-sg"]}]}]

    alive = []
    n = 0
    while True:
        started = time.monotonic()
        created = []
        for i in range(args.apis):
            api = rest.create_rest_api(name=f"churn-{n}-{i}", endpointConfiguration={"types": ["REGIONAL"]})
            res = rest.create_resource(restApiId=api["id"], parentId=api["rootResourceId"], pathPart="orders")
            rest.put_method(restApiId=api["id"], resourceId=res["id"], httpMethod="GET", authorizationType="NONE")
            rest.put_integration(restApiId=api["id"], resourceId=res["id"], httpMethod="GET", type="HTTP_PROXY",
                                 integrationHttpMethod="GET", uri=f"http://{nlb['DNSName']}/orders",
                                 connectionType="VPC_LINK", connectionId=link)
            rest.create_deployment(restApiId=api["id"], stageName="prod")
            created.append(api["id"])
        deleted = alive
        for api in deleted:
            rest.delete_rest_api(restApiId=api)
        alive = created
        if n % 2 == 0:
            deployment = rest.create_deployment(restApiId=orders)["id"]
            rest.create_stage(restApiId=orders, stageName="preview", deploymentId=deployment)
            elb.deregister_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=targets[1:])
            ec2.revoke_security_group_ingress(GroupId=groups["target-sg"], IpPermissions=rule)
        else:
            rest.delete_stage(restApiId=orders, stageName="preview")
            elb.register_targets(TargetGroupArn=tg["TargetGroupArn"], Targets=targets[1:])
            ec2.authorize_security_group_ingress(GroupId=groups["target-sg"], IpPermissions=rule)
        print(json.dumps({"period": n, "created": created, "deleted": deleted}), flush=True)
        n += 1
        time.sleep(max(0.0, args.period - (time.monotonic() - started)))


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, BrokenPipeError):
        sys.exit(0)
