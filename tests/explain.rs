//! `hopwatch explain` against moto in server mode holding the brief's security-group tables
//! (tests/moto/fixture.py): every edge of T2 and T4 allowed; each rule removed in turn gives
//! exactly that edge, port, purpose and direction, with a fix that the real AWS CLI applies
//! to moto as printed, after which the edge is allowed again; a NACL deny is named by its
//! number; T1's target group that allows only the agent is flagged.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::moto::{self, Moto};

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

fn aws_env(cmd: &mut Command) -> &mut Command {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
}

/// `explain --json`: its exit code and document.
fn explain(moto: &Moto) -> (i32, serde_json::Value) {
    explain_apis(moto, &[])
}

/// `explain --json` of these APIs only (`--api`, every API when empty). A walk is paced at
/// five API Gateway calls a second, so the seed's six APIs take about 9 s: the rule-by-rule
/// loop asks for the two it judges.
fn explain_apis(moto: &Moto, apis: &[&str]) -> (i32, serde_json::Value) {
    let mut cmd = Command::new(BIN);
    let out = aws_env(&mut cmd)
        .args([
            "explain",
            "--json",
            "--region",
            "us-east-1",
            "--endpoint-url",
            &moto.endpoint,
        ])
        .args(apis.iter().flat_map(|id| ["--api", id]))
        .output()
        .expect("explain");
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "explain printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), doc)
}

/// One check, as the tests compare them: (chain, from, to, port, purpose, direction).
type Check = (String, String, String, u64, String, String);

fn checks(doc: &serde_json::Value, chains: &[&str], allowed: bool) -> BTreeSet<Check> {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    doc["chains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| chains.contains(&c["name"].as_str().unwrap_or_default()))
        .flat_map(|c| {
            let name = s(&c["name"]);
            c["edges"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(move |e| e["allowed"].as_bool() == Some(allowed))
                .map(move |e| {
                    (
                        name.clone(),
                        s(&e["from"]),
                        s(&e["to"]),
                        e["port"].as_u64().unwrap_or(0),
                        s(&e["purpose"]),
                        s(&e["direction"]),
                    )
                })
        })
        .collect()
}

fn edge(e: &serde_json::Value, check: &Check) -> bool {
    e["from"] == check.1.as_str()
        && e["to"] == check.2.as_str()
        && e["port"].as_u64() == Some(check.3)
        && e["purpose"] == check.4.as_str()
        && e["direction"] == check.5.as_str()
}

/// The `fix` of the one failing check `check` of `chain`.
fn fix_of(doc: &serde_json::Value, check: &Check) -> String {
    doc["chains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == check.0.as_str())
        .flat_map(|c| c["edges"].as_array().into_iter().flatten())
        .find(|e| edge(e, check) && e["allowed"] == false)
        .and_then(|e| e["fix"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no fix for {check:?}: {doc:#}"))
}

/// Runs a printed fix, as printed, with the real AWS CLI pointed at moto.
fn apply(moto: &Moto, python: &std::path::Path, fix: &str) {
    assert!(fix.starts_with("aws "), "{fix}");
    let bin = python.parent().expect("venv bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    let out = aws_env(&mut cmd)
        .args(["-c", fix])
        .env("PATH", path)
        .env("AWS_ENDPOINT_URL", &moto.endpoint)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "the printed fix failed: {fix}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn check(chain: &str, from: &str, to: &str, port: u64, purpose: &str, direction: &str) -> Check {
    (
        chain.into(),
        from.into(),
        to.into(),
        port,
        purpose.into(),
        direction.into(),
    )
}

const T2: &str = "billing-prod";
const T4: &str = "users-default";

#[test]
fn explain_reads_the_seed_tables_and_names_each_missing_rule() {
    let Some(python) = moto::python() else {
        return moto::skip("explain_reads_the_seed_tables_and_names_each_missing_rule");
    };
    let moto = Moto::start(python.clone(), None);
    let f = moto.fixture(["10.0.1.20", "10.0.2.20"]);
    let sg = |n: &str| {
        f["security_groups"][n]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    // The seed's tables: every check of T2 and T4 passes, traffic and health-check ports.
    let (code, doc) = explain(&moto);
    assert_eq!(code, 1, "other chains (T1) have missing rules: {doc:#}");
    assert_eq!(
        checks(&doc, &[T2, T4], false),
        BTreeSet::new(),
        "the seed's tables allow T2 and T4: {doc:#}"
    );
    let expected: BTreeSet<Check> = [
        check(T2, "t2-nlb", "t2-alb", 80, "traffic", "ingress"),
        check(T2, "t2-nlb", "t2-alb", 8080, "health_check", "ingress"),
        check(T2, "t2-alb", "target", 80, "traffic", "ingress"),
        check(T2, "t2-alb", "target", 80, "traffic", "egress"),
        check(T2, "t2-alb", "target", 8080, "health_check", "ingress"),
        check(T2, "t2-alb", "target", 8080, "health_check", "egress"),
        check(T4, "gateway", "t4-alb", 80, "traffic", "ingress"),
        check(T4, "gateway", "t4-alb", 80, "traffic", "egress"),
        check(T4, "t4-alb", "target", 80, "traffic", "ingress"),
        check(T4, "t4-alb", "target", 80, "traffic", "egress"),
        check(T4, "t4-alb", "target", 8080, "health_check", "ingress"),
        check(T4, "t4-alb", "target", 8080, "health_check", "egress"),
    ]
    .into_iter()
    .collect();
    let allowed = checks(&doc, &[T2, T4], true);
    assert!(
        expected.is_subset(&allowed),
        "missing checks: {:?}",
        expected.difference(&allowed).collect::<Vec<_>>()
    );

    // T1: target-sg allows only the agent's group; over PrivateLink the targets see the NLB.
    let t1 = doc["chains"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "orders-prod"))
        .expect("orders-prod");
    let flagged = t1["edges"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| {
            e["from"] == "t1-nlb"
                && e["to"] == "target"
                && e["port"] == 80
                && e["purpose"] == "traffic"
                && e["direction"] == "ingress"
        })
        .expect("the NLB -> target ingress check");
    assert_eq!(flagged["allowed"], false, "{t1:#}");
    assert!(
        flagged["source"]
            .as_str()
            .is_some_and(|s| s.contains("NLB t1-nlb") && s.contains("10.0.1.0/24")),
        "the NLB's subnets stand in for its addresses (moto makes no interfaces): {flagged}"
    );
    assert_eq!(
        flagged["fix"],
        format!(
            "aws ec2 authorize-security-group-ingress --group-id {} --protocol tcp --port 80 --source-group {}",
            sg("target-sg"),
            sg("alb-sg")
        ),
        "the NLB's own group, referenced"
    );
    assert!(
        t1["notes"].to_string().contains("subnets' ranges stand in"),
        "{t1:#}"
    );

    // Each rule of the tables removed in turn: exactly that check fails; its fix, run by the
    // AWS CLI as printed, puts it back.
    let perm = |port: u16, to: &str| {
        format!("[{{'IpProtocol': 'tcp', 'FromPort': {port}, 'ToPort': {port}, {to}}}]")
    };
    let cidr = "'IpRanges': [{'CidrIp': '10.0.0.0/16'}]";
    let group = |g: &str| format!("'UserIdGroupPairs': [{{'GroupId': '{}'}}]", sg(g));
    let cases: Vec<(String, Check)> = vec![
        (
            format!(
                "ec2.revoke_security_group_ingress(GroupId='{}', IpPermissions={})",
                sg("alb-sg"),
                perm(80, cidr)
            ),
            check(T2, "t2-nlb", "t2-alb", 80, "traffic", "ingress"),
        ),
        (
            format!(
                "ec2.revoke_security_group_ingress(GroupId='{}', IpPermissions={})",
                sg("alb-sg"),
                perm(8080, cidr)
            ),
            check(T2, "t2-nlb", "t2-alb", 8080, "health_check", "ingress"),
        ),
        (
            format!(
                "ec2.revoke_security_group_egress(GroupId='{}', IpPermissions={})",
                sg("alb-sg"),
                perm(80, &group("target-a-sg"))
            ),
            check(T2, "t2-alb", "target", 80, "traffic", "egress"),
        ),
        (
            format!(
                "ec2.revoke_security_group_egress(GroupId='{}', IpPermissions={})",
                sg("alb-sg"),
                perm(8080, &group("target-a-sg"))
            ),
            check(T2, "t2-alb", "target", 8080, "health_check", "egress"),
        ),
        (
            format!(
                "ec2.revoke_security_group_ingress(GroupId='{}', IpPermissions={})",
                sg("target-a-sg"),
                perm(80, &group("alb-sg"))
            ),
            check(T2, "t2-alb", "target", 80, "traffic", "ingress"),
        ),
        (
            format!(
                "ec2.revoke_security_group_ingress(GroupId='{}', IpPermissions={})",
                sg("target-a-sg"),
                perm(8080, &group("alb-sg"))
            ),
            check(T2, "t2-alb", "target", 8080, "health_check", "ingress"),
        ),
        (
            format!(
                "ec2.revoke_security_group_egress(GroupId='{}', IpPermissions={})",
                sg("httpapi-sg"),
                perm(80, &group("t4-alb-sg"))
            ),
            check(T4, "gateway", "t4-alb", 80, "traffic", "egress"),
        ),
        (
            format!(
                "ec2.revoke_security_group_ingress(GroupId='{}', IpPermissions={})",
                sg("t4-alb-sg"),
                perm(80, &group("httpapi-sg"))
            ),
            check(T4, "gateway", "t4-alb", 80, "traffic", "ingress"),
        ),
        (
            format!(
                "ec2.revoke_security_group_egress(GroupId='{}', IpPermissions={})",
                sg("t4-alb-sg"),
                perm(80, &group("target-alb-sg"))
            ),
            check(T4, "t4-alb", "target", 80, "traffic", "egress"),
        ),
        (
            format!(
                "ec2.revoke_security_group_egress(GroupId='{}', IpPermissions={})",
                sg("t4-alb-sg"),
                perm(8080, &group("target-alb-sg"))
            ),
            check(T4, "t4-alb", "target", 8080, "health_check", "egress"),
        ),
        (
            format!(
                "ec2.revoke_security_group_ingress(GroupId='{}', IpPermissions={})",
                sg("target-alb-sg"),
                perm(80, &group("t4-alb-sg"))
            ),
            check(T4, "t4-alb", "target", 80, "traffic", "ingress"),
        ),
        (
            format!(
                "ec2.revoke_security_group_ingress(GroupId='{}', IpPermissions={})",
                sg("target-alb-sg"),
                perm(8080, &group("t4-alb-sg"))
            ),
            check(T4, "t4-alb", "target", 8080, "health_check", "ingress"),
        ),
    ];
    let t2_t4 = [
        f["rest"]["billing"].as_str().expect("billing's id"),
        f["http"]["users"]["id"].as_str().expect("users' id"),
    ];
    for (revoke, expected) in &cases {
        moto.boto(revoke);
        let (code, doc) = explain_apis(&moto, &t2_t4);
        assert_eq!(code, 1);
        assert_eq!(
            checks(&doc, &[T2, T4], false),
            BTreeSet::from([expected.clone()]),
            "after {revoke}"
        );
        apply(&moto, &python, &fix_of(&doc, expected));
        let (_, doc) = explain_apis(&moto, &t2_t4);
        assert_eq!(
            checks(&doc, &[T2, T4], false),
            BTreeSet::new(),
            "the fix for {expected:?} did not put it back: {doc:#}"
        );
    }
}

#[test]
fn a_nacl_deny_is_named_by_its_number_and_its_fix_lets_the_flow_through() {
    let Some(python) = moto::python() else {
        return moto::skip("a_nacl_deny_is_named_by_its_number_and_its_fix_lets_the_flow_through");
    };
    let moto = Moto::start(python.clone(), None);
    let f = moto.fixture(["10.0.1.20", "10.0.2.20"]);
    let (vpc, sub_a) = (
        f["vpc"].as_str().unwrap_or_default(),
        f["subnets"][0].as_str().unwrap_or_default(),
    );
    // A NACL on the first target subnet: entry 90 denies 8080 from the second subnet (where the
    // ALB's other node lives); 100 allows the rest, both ways.
    moto.boto(&format!(
        "acl = ec2.create_network_acl(VpcId='{vpc}')['NetworkAcl']['NetworkAclId']\n\
         ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=90, Protocol='6', RuleAction='deny', Egress=False, CidrBlock='10.0.2.0/24', PortRange={{'From': 8080, 'To': 8080}})\n\
         ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Protocol='-1', RuleAction='allow', Egress=False, CidrBlock='0.0.0.0/0')\n\
         ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=100, Protocol='-1', RuleAction='allow', Egress=True, CidrBlock='0.0.0.0/0')\n\
         assoc = ec2.describe_network_acls(Filters=[{{'Name': 'association.subnet-id', 'Values': ['{sub_a}']}}])['NetworkAcls'][0]['Associations']\n\
         aid = [a['NetworkAclAssociationId'] for a in assoc if a['SubnetId'] == '{sub_a}'][0]\n\
         ec2.replace_network_acl_association(AssociationId=aid, NetworkAclId=acl)"
    ));
    let (code, doc) = explain(&moto);
    assert_eq!(code, 1);
    let denied: Vec<&serde_json::Value> = doc["chains"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == T2)
        .flat_map(|c| c["edges"].as_array().into_iter().flatten())
        .filter(|e| e["allowed"] == false)
        .collect();
    // Both flows into that subnet from the other one on 8080: the NLB's health check of the
    // ALB's node there, and the ALB's health check of the target there. Nothing else.
    let what: BTreeSet<(String, String, u64, String, String)> = denied
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (
                s("from"),
                s("to"),
                e["port"].as_u64().unwrap_or(0),
                s("purpose"),
                s("direction"),
            )
        })
        .collect();
    let row = |from: &str, to: &str| {
        (
            from.to_string(),
            to.to_string(),
            8080,
            "health_check".to_string(),
            "nacl".to_string(),
        )
    };
    assert_eq!(
        what,
        BTreeSet::from([row("t2-nlb", "t2-alb"), row("t2-alb", "target")]),
        "{doc:#}"
    );
    for e in &denied {
        assert!(
            e["rule"]
                .as_str()
                .is_some_and(|r| r.contains("denied by entry 90")
                    && r.contains("inbound")
                    && r.contains("from 10.0.2.0/24")),
            "{e:#}"
        );
    }
    let e = denied[0];
    // Traffic on 80 passes the same NACL (entry 100).
    assert!(
        checks(&doc, &[T2], true).contains(&check(T2, "t2-alb", "target", 80, "traffic", "nacl")),
        "{doc:#}"
    );
    let fix = e["fix"].as_str().expect("a fix").to_string();
    assert!(
        fix.contains("--rule-number 89") && fix.contains("--cidr-block 10.0.2.0/24"),
        "below the deny, for the subnet it denies: {fix}"
    );
    apply(&moto, &python, &fix);
    let (_, doc) = explain(&moto);
    assert_eq!(checks(&doc, &[T2], false), BTreeSet::new(), "{doc:#}");
}
