#!/usr/bin/env python3
"""Builds the brief's six topologies (T1-T6) in a moto server, as AWS would hold them, and
prints what was made as JSON (ids, ARNs, DNS names, addresses) for tests/discover.rs to compare
hopwatch's discovered config with.

    python fixture.py --endpoint http://127.0.0.1:PORT [--targets 127.0.0.5,127.0.0.6]

--targets: the two addresses registered as targets and Cloud Map instances (default 10.0.1.20
and 10.0.2.20). Tests that probe what they discover register loopback addresses, so nothing is
ever sent to an address outside the test's own network.

Security groups are the brief's tables (T2 and T4); issue 16's `explain` reads them.
"""
import argparse
import ipaddress
import json
import sys
import urllib.request

import boto3

REGION = "us-east-1"


def main():
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
    sd = s.client("servicediscovery", endpoint_url=ep)
    out = {"region": REGION}

    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    sub_a = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24", AvailabilityZone="us-east-1a")["Subnet"]["SubnetId"]
    sub_b = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.2.0/24", AvailabilityZone="us-east-1b")["Subnet"]["SubnetId"]
    out.update(vpc=vpc, subnets=[sub_a, sub_b])

    def group(name):
        return ec2.create_security_group(GroupName=name, Description=name, VpcId=vpc)["GroupId"]

    def perm(port, cidr=None, ref=None):
        p = {"IpProtocol": "tcp", "FromPort": port, "ToPort": port}
        if cidr:
            p["IpRanges"] = [{"CidrIp": cidr}]
        if ref:
            p["UserIdGroupPairs"] = [{"GroupId": ref}]
        return p

    everything = [{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]
    sgs = {n: group(n) for n in ("alb-sg", "target-a-sg", "httpapi-sg", "t4-alb-sg", "target-alb-sg", "target-sg", "agent-sg")}
    for n in ("alb-sg", "httpapi-sg", "t4-alb-sg"):
        ec2.revoke_security_group_egress(GroupId=sgs[n], IpPermissions=everything)
    # T2 (brief §2): alb-sg in 80/8080 from the VPC CIDR, out 80/8080 to target-a-sg;
    # target-a-sg in 80/8080 from alb-sg.
    ec2.authorize_security_group_ingress(GroupId=sgs["alb-sg"], IpPermissions=[perm(80, "10.0.0.0/16"), perm(8080, "10.0.0.0/16")])
    ec2.authorize_security_group_egress(GroupId=sgs["alb-sg"], IpPermissions=[perm(80, ref=sgs["target-a-sg"]), perm(8080, ref=sgs["target-a-sg"])])
    ec2.authorize_security_group_ingress(GroupId=sgs["target-a-sg"], IpPermissions=[perm(80, ref=sgs["alb-sg"]), perm(8080, ref=sgs["alb-sg"])])
    # T4: httpapi-sg out 80 to alb-sg; alb-sg in 80 from httpapi-sg, out 80/8080 to
    # target-alb-sg; target-alb-sg in 80/8080 from alb-sg.
    ec2.authorize_security_group_egress(GroupId=sgs["httpapi-sg"], IpPermissions=[perm(80, ref=sgs["t4-alb-sg"])])
    ec2.authorize_security_group_ingress(GroupId=sgs["t4-alb-sg"], IpPermissions=[perm(80, ref=sgs["httpapi-sg"])])
    ec2.authorize_security_group_egress(GroupId=sgs["t4-alb-sg"], IpPermissions=[perm(80, ref=sgs["target-alb-sg"]), perm(8080, ref=sgs["target-alb-sg"])])
    ec2.authorize_security_group_ingress(GroupId=sgs["target-alb-sg"], IpPermissions=[perm(80, ref=sgs["t4-alb-sg"]), perm(8080, ref=sgs["t4-alb-sg"])])
    # T1: target-sg allows only the agent's group (the seed's central mistake: not the NLB).
    ec2.authorize_security_group_ingress(GroupId=sgs["target-sg"], IpPermissions=[perm(80, ref=sgs["agent-sg"])])
    out["security_groups"] = sgs

    reservation = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=sub_a,
                                    PrivateIpAddress="10.0.1.30", SecurityGroupIds=[sgs["target-a-sg"]])
    instance_a = reservation["Instances"][0]["InstanceId"]
    reservation = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, SubnetId=sub_b,
                                    PrivateIpAddress="10.0.2.30", SecurityGroupIds=[sgs["target-a-sg"]])
    instance_b = reservation["Instances"][0]["InstanceId"]
    out["instances"] = {instance_a: "10.0.1.30", instance_b: "10.0.2.30"}
    # The IP targets' interfaces (T1's targets carry target-sg, T4's target-alb-sg: the same two
    # addresses serve both), in the subnet that holds them. Loopback targets (tests that probe
    # what they discover) go in the first subnet: moto does not check, and AWS never sees them.
    out["enis"] = {}
    for addr in (t1, t2):
        subnet = sub_b if ipaddress.ip_address(addr) in ipaddress.ip_network("10.0.2.0/24") else sub_a
        eni = ec2.create_network_interface(SubnetId=subnet, PrivateIpAddress=addr,
                                           Groups=[sgs["target-sg"], sgs["target-alb-sg"]])
        out["enis"][addr] = eni["NetworkInterface"]["NetworkInterfaceId"]

    def lb(name, kind, groups=None):
        kw = dict(Name=name, Subnets=[sub_a, sub_b], Scheme="internal", Type=kind)
        if groups:
            kw["SecurityGroups"] = groups
        made = elb.create_load_balancer(**kw)["LoadBalancers"][0]
        return made["LoadBalancerArn"], made["DNSName"]

    def tg(name, protocol, target_type, health_port="traffic-port", health_path=None):
        kw = dict(Name=name, Protocol=protocol, Port=80, VpcId=vpc, TargetType=target_type,
                  HealthCheckPort=health_port)
        if health_path:
            kw["HealthCheckPath"] = health_path
            kw["HealthCheckProtocol"] = "HTTP"
        return elb.create_target_group(**kw)["TargetGroups"][0]["TargetGroupArn"]

    def listener(lb_arn, protocol, tg_arn, port=80):
        return elb.create_listener(LoadBalancerArn=lb_arn, Protocol=protocol, Port=port,
                                   DefaultActions=[{"Type": "forward", "TargetGroupArn": tg_arn}])["Listeners"][0]["ListenerArn"]

    def attrs(tg_arn, **kv):
        elb.modify_target_group_attributes(TargetGroupArn=tg_arn, Attributes=[{"Key": k.replace("__", "."), "Value": v} for k, v in kv.items()])

    # T1: NLB -> ip targets with proxy protocol v2; client IP preservation left at AWS's default.
    t1_nlb, t1_dns = lb("t1-nlb", "network", [sgs["alb-sg"]])
    t1_tg = tg("t1-targets", "TCP", "ip")
    elb.register_targets(TargetGroupArn=t1_tg, Targets=[{"Id": t1, "Port": 80}, {"Id": t2, "Port": 80}])
    attrs(t1_tg, proxy_protocol_v2__enabled="true")
    listener(t1_nlb, "TCP", t1_tg)
    # T2: NLB -> alb target group -> ALB -> instance targets (health check on 8080).
    t2_nlb, t2_nlb_dns = lb("t2-nlb", "network")
    t2_alb, t2_alb_dns = lb("t2-alb", "application", [sgs["alb-sg"]])
    t2_app = tg("t2-app", "HTTP", "instance", "8080", "/health")
    elb.register_targets(TargetGroupArn=t2_app, Targets=[{"Id": instance_a, "Port": 80}, {"Id": instance_b, "Port": 80}])
    listener(t2_alb, "HTTP", t2_app)
    # The NLB checks the ALB's health on 8080 (the brief's alb-sg table), a listener of its own.
    listener(t2_alb, "HTTP", t2_app, port=8080)
    t2_alb_tg = tg("t2-alb-tg", "TCP", "alb", "8080")
    elb.register_targets(TargetGroupArn=t2_alb_tg, Targets=[{"Id": t2_alb, "Port": 80}])
    listener(t2_nlb, "TCP", t2_alb_tg)
    # T3: an ALB reached by a REST API through a VPC link v2.
    t3_alb, t3_dns = lb("t3-alb", "application")
    t3_tg = tg("t3-app", "HTTP", "ip")
    elb.register_targets(TargetGroupArn=t3_tg, Targets=[{"Id": t1, "Port": 80}])
    listener(t3_alb, "HTTP", t3_tg)
    elb.modify_load_balancer_attributes(LoadBalancerArn=t3_alb, Attributes=[{"Key": "routing.http.xff_header_processing.mode", "Value": "preserve"}])
    # T4: HTTP API -> ALB -> ip targets.
    t4_alb, t4_dns = lb("t4-alb", "application", [sgs["t4-alb-sg"]])
    t4_tg = tg("t4-app", "HTTP", "ip", "8080", "/health")
    elb.register_targets(TargetGroupArn=t4_tg, Targets=[{"Id": t1, "Port": 80}, {"Id": t2, "Port": 80}])
    t4_listener = listener(t4_alb, "HTTP", t4_tg)
    # T5: HTTP API -> NLB -> instance targets, client IP preservation set off by hand.
    t5_nlb, t5_dns = lb("t5-nlb", "network")
    t5_tg = tg("t5-app", "TCP", "instance")
    elb.register_targets(TargetGroupArn=t5_tg, Targets=[{"Id": instance_a, "Port": 80}])
    attrs(t5_tg, preserve_client_ip__enabled="false")
    t5_listener = listener(t5_nlb, "TCP", t5_tg)
    out["load_balancers"] = {
        "t1-nlb": {"arn": t1_nlb, "dns": t1_dns, "tg": t1_tg},
        "t2-nlb": {"arn": t2_nlb, "dns": t2_nlb_dns, "tg": t2_alb_tg},
        "t2-alb": {"arn": t2_alb, "dns": t2_alb_dns, "tg": t2_app},
        "t3-alb": {"arn": t3_alb, "dns": t3_dns, "tg": t3_tg},
        "t4-alb": {"arn": t4_alb, "dns": t4_dns, "tg": t4_tg, "listener": t4_listener},
        "t5-nlb": {"arn": t5_nlb, "dns": t5_dns, "tg": t5_tg, "listener": t5_listener},
    }

    # REST APIs: T1, T2 (VPC link v1 to the NLB), T3 (v2 to the ALB).
    def rest_api(name, path, uri, link=None, target=None):
        api = rest.create_rest_api(name=name, endpointConfiguration={"types": ["REGIONAL"]})
        root = api["rootResourceId"]
        res = rest.create_resource(restApiId=api["id"], parentId=root, pathPart=path.strip("/"))
        rest.put_method(restApiId=api["id"], resourceId=res["id"], httpMethod="GET", authorizationType="NONE")
        kw = dict(restApiId=api["id"], resourceId=res["id"], httpMethod="GET", type="HTTP_PROXY",
                  integrationHttpMethod="GET", uri=uri, connectionType="VPC_LINK")
        if link:
            kw["connectionId"] = link
        if target:
            kw["integrationTarget"] = target
        rest.put_integration(**kw)
        rest.create_deployment(restApiId=api["id"], stageName="prod")
        return api["id"]

    t1_link = rest.create_vpc_link(name="t1-link", targetArns=[t1_nlb])["id"]
    t2_link = rest.create_vpc_link(name="t2-link", targetArns=[t2_nlb])["id"]
    orders = rest_api("orders", "/items", f"http://{t1_dns}/items", link=t1_link)
    billing = rest_api("billing", "/invoices", f"http://{t2_nlb_dns}/invoices", link=t2_link)
    search = rest_api("search", "/find", f"http://{t3_dns}/find", target=t3_alb)
    out["rest"] = {"orders": orders, "billing": billing, "search": search,
                   "links": {"t1": t1_link, "t2": t2_link}}

    # HTTP APIs: T4 (ALB), T5 (NLB), T6 (Cloud Map), over one VPC link v2.
    link = http.create_vpc_link(Name="httpapi-link", SubnetIds=[sub_a, sub_b], SecurityGroupIds=[sgs["httpapi-sg"]])["VpcLinkId"]

    def http_api(name, route, uri):
        api = http.create_api(Name=name, ProtocolType="HTTP")
        integration = http.create_integration(ApiId=api["ApiId"], IntegrationType="HTTP_PROXY", IntegrationMethod="ANY",
                                              ConnectionType="VPC_LINK", ConnectionId=link, IntegrationUri=uri,
                                              PayloadFormatVersion="1.0")
        http.create_route(ApiId=api["ApiId"], RouteKey=route, Target=f"integrations/{integration['IntegrationId']}")
        http.create_stage(ApiId=api["ApiId"], StageName="$default", AutoDeploy=True)
        return {"id": api["ApiId"], "endpoint": api["ApiEndpoint"]}

    namespace_op = sd.create_http_namespace(Name="shop")["OperationId"]
    namespace = sd.get_operation(OperationId=namespace_op)["Operation"]["Targets"]["NAMESPACE"]
    service = sd.create_service(Name="catalog", NamespaceId=namespace, Type="HTTP")["Service"]
    for i, addr in enumerate((t1, t2)):
        sd.register_instance(ServiceId=service["Id"], InstanceId=f"catalog-{i}",
                             Attributes={"AWS_INSTANCE_IPV4": addr, "AWS_INSTANCE_PORT": "80"})
    out["http"] = {
        "users": http_api("users", "GET /users", t4_listener),
        "cart": http_api("cart", "GET /cart", t5_listener),
        "catalog": http_api("catalog", "GET /catalog", service["Arn"]),
        "link": link,
    }
    out["cloudmap"] = {"namespace": "shop", "namespace_id": namespace, "service": "catalog",
                       "service_id": service["Id"], "service_arn": service["Arn"]}
    out["targets"] = [t1, t2]
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
