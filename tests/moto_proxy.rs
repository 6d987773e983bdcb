//! The fault proxy (tests/moto/fault_proxy.py) in front of moto: it passes calls through
//! untouched, names each one by service and operation, and throttles the ones it is told to
//! with the answer AWS sends, which botocore and the Rust SDK both take for throttling. And the
//! large estate (tests/moto/estate.py) holds what it says it made.
//!
//! Every server binds 127.0.0.1; nothing leaves the host.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::interceptors::context::InterceptorContext;
use aws_smithy_runtime_api::client::retries::classifiers::{
    ClassifyRetry, RetryAction, RetryClassifierPriority, RetryReason,
};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use aws_smithy_types::retry::ErrorKind;
use common::moto::{self, Call, FaultProxy, Moto};

/// What (service, operation, status, throttled) the proxy listed, in order.
fn seen(calls: &[Call]) -> Vec<(String, String, u16, bool)> {
    calls
        .iter()
        .map(|c| {
            (
                c.service.clone(),
                c.operation.clone(),
                c.status,
                c.throttled,
            )
        })
        .collect()
}

fn call(
    service: &str,
    operation: &str,
    status: u16,
    throttled: bool,
) -> (String, String, u16, bool) {
    (service.into(), operation.into(), status, throttled)
}

#[test]
fn throttled_calls_get_each_services_own_answer_and_the_rest_pass() {
    let Some(python) = moto::python() else {
        return moto::skip("throttled_calls_get_each_services_own_answer_and_the_rest_pass");
    };
    let moto = Moto::start(python, None);
    let proxy = FaultProxy::start(&moto);
    assert!(proxy.endpoint.starts_with("http://127.0.0.1:"));

    proxy.throttle(&[
        ("ec2", "DescribeSecurityGroups"),
        ("elasticloadbalancing", "*"),
        ("apigateway", "GetRestApis"),
        ("apigateway", "GetApis"),
        ("servicediscovery", "*"),
    ]);
    // Each outcome as botocore parsed it, and whether botocore's standard retry mode takes it
    // for throttling (its ThrottledRetryableChecker: the error code alone).
    let out = proxy.boto(
        r#"
from botocore.exceptions import ClientError
from botocore.retries.standard import ThrottledRetryableChecker, RetryContext
def outcome(f):
    try:
        f()
        return {"ok": True}
    except ClientError as e:
        r = e.response
        return {"status": r["ResponseMetadata"]["HTTPStatusCode"], "code": r["Error"]["Code"],
                "message": r["Error"].get("Message"),
                "throttling": ThrottledRetryableChecker().is_retryable(RetryContext(attempt_number=1, parsed_response=r))}
print(json.dumps({
    "sgs": outcome(ec2.describe_security_groups),
    "vpcs": outcome(ec2.describe_vpcs),
    "elb": outcome(elb.describe_load_balancers),
    "rest": outcome(rest.get_rest_apis),
    "http": outcome(http.get_apis),
    "links": outcome(rest.get_vpc_links),
    "missing": outcome(lambda: rest.get_rest_api(restApiId="nope")),
    "services": outcome(sd.list_services),
    "discover": outcome(lambda: sd.discover_instances(NamespaceName="shop", ServiceName="catalog")),
}))
"#,
    );
    let o: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let answer = |k: &str| {
        (
            o[k]["status"].as_u64().unwrap_or(0),
            o[k]["code"].as_str().unwrap_or("").to_string(),
            o[k]["throttling"].as_bool().unwrap_or(false),
        )
    };
    assert_eq!(
        answer("sgs"),
        (503, "RequestLimitExceeded".into(), true),
        "{o}"
    );
    assert_eq!(o["sgs"]["message"], "Request limit exceeded.");
    assert_eq!(answer("elb"), (400, "Throttling".into(), true), "{o}");
    assert_eq!(o["elb"]["message"], "Rate exceeded");
    assert_eq!(
        answer("rest"),
        (429, "TooManyRequestsException".into(), true),
        "{o}"
    );
    assert_eq!(o["rest"]["message"], "Too Many Requests");
    assert_eq!(
        answer("http"),
        (429, "TooManyRequestsException".into(), true),
        "{o}"
    );
    assert_eq!(
        answer("services"),
        (400, "ThrottlingException".into(), true),
        "{o}"
    );
    assert_eq!(
        answer("discover"),
        (429, "RequestLimitExceeded".into(), true),
        "{o}"
    );
    // What is not throttled is moto's answer, success or error.
    assert_eq!(o["vpcs"]["ok"], true, "{o}");
    assert_eq!(o["links"]["ok"], true, "{o}");
    assert_eq!(
        answer("missing"),
        (404, "NotFoundException".into(), false),
        "{o}"
    );

    assert_eq!(
        seen(&proxy.calls()),
        vec![
            call("ec2", "DescribeSecurityGroups", 503, true),
            call("ec2", "DescribeVpcs", 200, false),
            call("elasticloadbalancing", "DescribeLoadBalancers", 400, true),
            call("apigateway", "GetRestApis", 429, true),
            call("apigateway", "GetApis", 429, true),
            call("apigateway", "GetVpcLinks", 200, false),
            call("apigateway", "GetRestApi", 404, false),
            call("servicediscovery", "ListServices", 400, true),
            call("servicediscovery", "DiscoverInstances", 429, true),
        ]
    );

    // Cleared, everything reaches moto again; reset, the list starts over.
    proxy.clear();
    proxy.reset_calls();
    assert!(proxy.calls().is_empty());
    let out = proxy.boto(
        "print(len(elb.describe_load_balancers()['LoadBalancers']), len(ec2.describe_security_groups()['SecurityGroups']) > 0)",
    );
    assert_eq!(out.trim(), "0 True");
    assert_eq!(
        seen(&proxy.calls()),
        vec![
            call("elasticloadbalancing", "DescribeLoadBalancers", 200, false),
            call("ec2", "DescribeSecurityGroups", 200, false),
        ]
    );
}

/// Beside a moto in a network namespace (as the running-agent tests keep theirs), the proxy
/// runs in the same namespace, on its loopback.
#[test]
fn the_proxy_runs_beside_a_moto_in_a_namespace() {
    if !common::can_use_namespaces() {
        return common::skip(
            "the_proxy_runs_beside_a_moto_in_a_namespace",
            "needs root and ip netns",
        );
    }
    let Some(python) = moto::python() else {
        return moto::skip("the_proxy_runs_beside_a_moto_in_a_namespace");
    };
    let ns = common::Netns::new("fprx");
    let moto = Moto::start(python, Some(&ns));
    let proxy = FaultProxy::start(&moto);
    proxy.throttle(&[("ec2", "*")]);
    let out = proxy.boto(
        r#"
from botocore.exceptions import ClientError
try:
    ec2.describe_vpcs()
    print("passed")
except ClientError as e:
    print(e.response["Error"]["Code"])
print(len(elb.describe_load_balancers()["LoadBalancers"]))
"#,
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["RequestLimitExceeded", "0"]
    );
    assert_eq!(
        seen(&proxy.calls()),
        vec![
            call("ec2", "DescribeVpcs", 503, true),
            call("elasticloadbalancing", "DescribeLoadBalancers", 200, false),
        ]
    );
}

#[test]
fn answers_pass_through_unchanged() {
    let Some(python) = moto::python() else {
        return moto::skip("answers_pass_through_unchanged");
    };
    let moto = Moto::start(python, None);
    let proxy = FaultProxy::start(&moto);
    // The same request, straight to moto and through the proxy: byte for byte the same
    // answer (minus the headers that differ per answer), HEAD included.
    let out = proxy.python(&format!(
        r#"
import http.client, json
def ask(port, method, path, body=None, headers={{}}):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    hs = {{k.lower(): v for k, v in r.getheaders() if k.lower() not in ("date", "server", "x-amzn-requestid", "x-amz-request-id", "connection", "content-length", "transfer-encoding")}}
    return [r.status, hs, data.decode("utf-8", "replace"), len(data)]
moto, proxy = {}, {}
form = "Action=DescribeRegions&Version=2016-11-15"
auth = {{"Authorization": "AWS4-HMAC-SHA256 Credential=testing/20261204/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
        "Content-Type": "application/x-www-form-urlencoded"}}
print(json.dumps([[ask(p, "GET", "/moto-api/"), ask(p, "HEAD", "/moto-api/"), ask(p, "POST", "/", form, auth)] for p in (moto, proxy)]))
"#,
        moto.endpoint.rsplit(':').next().unwrap_or_default(),
        proxy.endpoint.rsplit(':').next().unwrap_or_default(),
    ));
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    let both: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(both[0], both[1], "straight to moto, then through the proxy");
    assert_eq!(both[1][0][0], 200);
    assert!(both[1][2][2]
        .as_str()
        .unwrap_or_default()
        .contains("us-east-1"));
    // HEAD: no body, the GET's length announced.
    assert_eq!(both[1][1][3], 0);
    let calls = proxy.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(
        (calls[0].service.as_str(), calls[0].operation.as_str()),
        ("unsigned", "GET /moto-api")
    );
    assert_eq!(
        (calls[2].service.as_str(), calls[2].operation.as_str()),
        ("ec2", "DescribeRegions")
    );
}

/// Records what the SDK's own classifiers decided for each attempt: it runs after them all
/// (after the transient-error classifier, the last of the SDK's) and decides nothing itself.
#[derive(Debug, Clone, Default)]
struct Verdicts(Arc<Mutex<Vec<RetryAction>>>);

impl Verdicts {
    /// The one kind of retry every classification since the last call was given (None: no
    /// retry indicated), or a panic naming them when they differ. The classifiers run more
    /// than once an attempt (the retry strategy, and the connection-poisoning interceptor):
    /// the proxy's list counts attempts.
    fn take(&self) -> Option<ErrorKind> {
        let kinds: Vec<Option<ErrorKind>> = std::mem::take(&mut *self.0.lock().expect("lock"))
            .into_iter()
            .map(|action| match action {
                RetryAction::RetryIndicated(RetryReason::RetryableError { kind, .. }) => Some(kind),
                _ => None,
            })
            .collect();
        assert!(
            !kinds.is_empty() && kinds.iter().all(|k| *k == kinds[0]),
            "classified as {kinds:?}"
        );
        kinds[0]
    }
}

impl ClassifyRetry for Verdicts {
    fn classify_retry(&self, _: &InterceptorContext) -> RetryAction {
        RetryAction::NoActionIndicated
    }

    fn classify_retry_v2(&self, _: &InterceptorContext, previous: &RetryAction) -> RetryAction {
        self.0.lock().expect("lock").push(previous.clone());
        RetryAction::NoActionIndicated
    }

    fn name(&self) -> &'static str {
        "test: the verdict of the SDK's classifiers"
    }

    fn priority(&self) -> RetryClassifierPriority {
        RetryClassifierPriority::run_after(RetryClassifierPriority::transient_error_classifier())
    }
}

#[tokio::test]
async fn the_rust_sdk_takes_each_throttling_answer_for_throttling() {
    let Some(python) = moto::python() else {
        return moto::skip("the_rust_sdk_takes_each_throttling_answer_for_throttling");
    };
    let moto = Moto::start(python, None);
    let proxy = FaultProxy::start(&moto);
    // hopwatch's own SDK loader (rustls, the endpoint for every service), two attempts a call.
    let sdk = hopwatch::aws::loader(Some("us-east-1"), Some(&proxy.endpoint))
        .credentials_provider(aws_credential_types::Credentials::new(
            "testing", "testing", None, None, "test",
        ))
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(2)
                .with_initial_backoff(Duration::from_millis(1)),
        )
        .load()
        .await;
    let verdicts = Verdicts::default();
    let rest = aws_sdk_apigateway::Client::from_conf(
        aws_sdk_apigateway::config::Builder::from(&sdk)
            .retry_classifier(verdicts.clone())
            .build(),
    );
    let http = aws_sdk_apigatewayv2::Client::from_conf(
        aws_sdk_apigatewayv2::config::Builder::from(&sdk)
            .retry_classifier(verdicts.clone())
            .build(),
    );
    let elb = aws_sdk_elasticloadbalancingv2::Client::from_conf(
        aws_sdk_elasticloadbalancingv2::config::Builder::from(&sdk)
            .retry_classifier(verdicts.clone())
            .build(),
    );
    let sd = aws_sdk_servicediscovery::Client::from_conf(
        aws_sdk_servicediscovery::config::Builder::from(&sdk)
            .interceptor(hopwatch::probe::cloudmap::AsGiven)
            .retry_classifier(verdicts.clone())
            .build(),
    );
    let throttled = Some(ErrorKind::ThrottlingError);

    // Unthrottled first: the clients work through the proxy, and a service error that is not
    // throttling is not retried.
    rest.get_rest_apis().send().await.expect("GetRestApis");
    let missing = rest.get_rest_api().rest_api_id("nope").send().await;
    assert_eq!(
        missing.expect_err("no such API").code(),
        Some("NotFoundException")
    );
    assert_eq!(verdicts.take(), None);

    proxy.throttle(&[
        ("apigateway", "*"),
        ("elasticloadbalancing", "*"),
        ("servicediscovery", "*"),
    ]);
    proxy.reset_calls();
    let e = rest.get_rest_apis().send().await.expect_err("throttled");
    assert_eq!(e.code(), Some("TooManyRequestsException"));
    assert_eq!(e.message(), Some("Too Many Requests"));
    assert_eq!(verdicts.take(), throttled, "GetRestApis");
    let e = http.get_apis().send().await.expect_err("throttled");
    assert_eq!(e.code(), Some("TooManyRequestsException"));
    assert_eq!(verdicts.take(), throttled, "GetApis");
    let e = elb
        .describe_load_balancers()
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(e.code(), Some("Throttling"));
    assert_eq!(e.message(), Some("Rate exceeded"));
    assert_eq!(verdicts.take(), throttled, "DescribeLoadBalancers");
    let e = sd.list_services().send().await.expect_err("throttled");
    assert_eq!(e.code(), Some("ThrottlingException"));
    assert_eq!(verdicts.take(), throttled, "ListServices");
    let e = sd
        .discover_instances()
        .namespace_name("shop")
        .service_name("catalog")
        .send()
        .await
        .expect_err("throttled");
    assert_eq!(e.code(), Some("RequestLimitExceeded"));
    assert_eq!(verdicts.take(), throttled, "DiscoverInstances");

    // Every attempt reached the proxy, and was answered by it.
    let twice = |service: &str, operation: &str, status: u16| {
        vec![call(service, operation, status, true); 2]
    };
    let expected: Vec<_> = [
        twice("apigateway", "GetRestApis", 429),
        twice("apigateway", "GetApis", 429),
        twice("elasticloadbalancing", "DescribeLoadBalancers", 400),
        twice("servicediscovery", "ListServices", 400),
        twice("servicediscovery", "DiscoverInstances", 429),
    ]
    .concat();
    assert_eq!(seen(&proxy.calls()), expected);

    proxy.clear();
    elb.describe_load_balancers().send().await.expect("cleared");
    assert_eq!(verdicts.take(), None);
}

#[test]
fn estate_holds_what_it_reports() {
    let Some(python) = moto::python() else {
        return moto::skip("estate_holds_what_it_reports");
    };
    let moto = Moto::start(python, None);
    let estate = moto.estate(20, &["127.0.0.5", "127.0.0.6"]);
    assert_eq!(estate["apis"], 20);
    assert_eq!(estate["rest_apis"], 12);
    assert_eq!(estate["http_apis"], 8);
    assert_eq!(estate["api_ids"].as_array().map(Vec::len), Some(20));
    assert_eq!(estate["load_balancers"], 6);
    // Read back through the proxy: the counts it printed are what moto holds.
    let proxy = FaultProxy::start(&moto);
    let out = proxy.boto(
        r#"
rest_ids = [a["id"] for a in rest.get_rest_apis(limit=500)["items"]]
http_ids = [a["ApiId"] for a in http.get_apis()["Items"]]
resources = sum(len([r for r in rest.get_resources(restApiId=a, embed=["methods"])["items"] if r.get("resourceMethods")]) for a in rest_ids)
routes = sum(len(http.get_routes(ApiId=a)["Items"]) for a in http_ids)
stages = sum(len(rest.get_stages(restApiId=a)["item"]) for a in rest_ids) + sum(len(http.get_stages(ApiId=a)["Items"]) for a in http_ids)
print(json.dumps({"rest": sorted(rest_ids), "http": sorted(http_ids), "resources": resources, "routes": routes, "stages": stages,
                  "links": [len(rest.get_vpc_links()["items"]), len(http.get_vpc_links()["Items"])],
                  "lbs": len(elb.describe_load_balancers()["LoadBalancers"]), "tgs": len(elb.describe_target_groups()["TargetGroups"])}))
"#,
    );
    let held: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let sorted = |v: &serde_json::Value| {
        let mut ids: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(String::from))
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(sorted(&held["rest"]), sorted(&estate["rest_api_ids"]));
    assert_eq!(sorted(&held["http"]), sorted(&estate["http_api_ids"]));
    assert_eq!(held["resources"], estate["resources"]);
    assert_eq!(held["routes"], estate["routes"]);
    assert_eq!(held["stages"], estate["stages"]);
    assert_eq!(held["links"], serde_json::json!([3, 2]));
    assert_eq!(held["lbs"], estate["load_balancers"]);
    assert_eq!(held["tgs"], estate["target_groups"]);

    // The calls were named as API Gateway's operations, and the window counts them.
    let calls = proxy.calls();
    let named = |op: &str| calls.iter().filter(|c| c.operation == op).count();
    assert_eq!(named("GetResources"), 12);
    assert_eq!(named("GetRoutes"), 8);
    assert_eq!(named("GetStages"), 20);
    let apigateway = calls.iter().filter(|c| c.service == "apigateway").count();
    let busiest = moto::max_per_second(&calls, "apigateway");
    assert!(
        (1..=apigateway).contains(&busiest),
        "{busiest} of {apigateway}"
    );
}

#[test]
fn the_busiest_second_is_counted_over_a_sliding_window() {
    let at = |t: f64, service: &str| Call {
        t,
        service: service.into(),
        operation: "GetRestApis".into(),
        status: 200,
        throttled: false,
    };
    let calls = [
        at(10.0, "apigateway"),
        at(10.5, "apigateway"),
        at(10.7, "ec2"),
        at(10.7, "ec2"),
        at(10.7, "ec2"),
        at(11.2, "apigateway"),
        at(11.3, "apigateway"),
        at(11.49, "apigateway"),
        at(11.5, "apigateway"),
        at(20.0, "apigateway"),
    ];
    // 10.5, 11.2, 11.3, 11.49 lie within one second; 10.5 and 11.5 are a full second apart.
    assert_eq!(moto::max_per_second(&calls, "apigateway"), 4);
    assert_eq!(moto::max_per_second(&calls, "ec2"), 3);
    assert_eq!(moto::max_per_second(&calls, "logs"), 0);
    assert_eq!(
        moto::max_in_window(&calls, "apigateway", Duration::from_secs(2)),
        6
    );
}
