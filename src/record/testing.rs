//! Rounds made by hand, for the tests of the record stage and of every sink.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{load_str, Chain};
use crate::diagnose::Verdict;
use crate::probe::{Outcome, ProbeResult};
use crate::schedule::{Probed, Round};

/// A REST → NLB → target chain "orders" whose target expects its source in 10.0.1.0/24,
/// and whose NLB has a health-check URL.
pub fn chain() -> Arc<Chain> {
    let text = r#"
[[chain]]
name = "orders"
kind = "rest-nlb"
  [[chain.hop]]
  name = "gateway"
  url = "http://127.0.0.1:1/"
  [[chain.hop]]
  name = "nlb"
  url = "http://127.0.0.1:2/"
  health_url = "http://127.0.0.1:3/health"
  [[chain.hop]]
  name = "target"
  url = "http://127.0.0.1:4/"
  expect_source = ["10.0.1.0/24"]
"#;
    match load_str("t.toml", text, &|_| None) {
        Ok(c) => c.chains[0].clone(),
        Err(e) => panic!("{e}"),
    }
}

/// Seconds after the epoch, as a wall time.
pub fn at(secs: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(secs)
}

pub fn result(outcome: Outcome, ms: u64, at: SystemTime, body: &str) -> ProbeResult {
    ProbeResult {
        outcome,
        status: outcome.is_ok().then_some(200),
        total: Duration::from_millis(ms),
        phases: Default::default(),
        started_at: at,
        remote: None,
        evidence: Default::default(),
        body: bytes::Bytes::from(body.to_string()),
        detail: None,
        trace_id: format!("Root=1-{:08x}-000000000000000000000001", 1_700_000_000u32),
        cert_not_after: None,
    }
}

/// What `hopwatch echo` answers when the NLB node 10.0.1.7 connected, with a PROXY v2
/// header naming the caller and the VPC endpoint.
pub const ECHO: &str = r#"{"service":"hopwatch-echo","peer":"10.0.1.7:41000","local":"10.0.3.10:80","method":"GET","path":"/","host":"x","x_forwarded_for":"203.0.113.9, 10.0.0.5","x_forwarded_proto":null,"x_forwarded_port":null,"x_amzn_trace_id":null,"proxy_protocol":[{"version":2,"command":"proxy","src":"10.0.0.5:50000","dst":"10.0.1.7:80","vpce_id":"vpce-0abc"}],"delay_us":0,"identity":{"hostname":"t","task_arn":null,"cluster":null,"availability_zone":null}}"#;

/// A round at `at` with one result per hop; the health check passes when `health_ok`.
pub fn round(
    chain: &Arc<Chain>,
    at: SystemTime,
    results: Vec<ProbeResult>,
    health_ok: bool,
) -> Round {
    let health = chain
        .hops
        .iter()
        .map(|h| {
            h.health.as_ref().map(|_| {
                let outcome = if health_ok {
                    Outcome::Ok
                } else {
                    Outcome::ConnectTimeout
                };
                result(outcome, 1, at, "")
            })
        })
        .collect();
    let n = chain.hops.len();
    Round {
        chain: chain.clone(),
        planned: Instant::now(),
        started: Instant::now(),
        started_wall: at,
        probed: Probed {
            results,
            health,
            resolved: vec![None; n],
            addresses: vec![Vec::new(); n],
        },
    }
}

pub fn verdict(up: bool, broken: Option<usize>) -> Verdict {
    Verdict {
        up,
        broken,
        blind_spots: Vec::new(),
        code: None,
        reason: None,
        contradictions: Vec::new(),
    }
}

/// A round judged with the given states and verdict, as the recorder would hand it to sinks.
pub fn observed(round: Round, up: &[bool], verdict: Verdict) -> crate::record::Observation {
    crate::record::Observation::new(round, up.to_vec(), verdict, Vec::new())
}
