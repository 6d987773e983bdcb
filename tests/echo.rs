//! `hopwatch echo` as a process: what it reflects, what it refuses, and its identity from ECS
//! task metadata.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_hopwatch");

struct Echo {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `hopwatch echo` on a free port of 127.0.0.1, with extra environment.
fn start(env: &[(&str, String)]) -> Echo {
    let port = refused_port().port();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--log-format",
        "json",
        "echo",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .env("RUST_LOG", "info")
    .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn echo");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    // Listening is logged once the socket is bound.
    let up = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains("hopwatch echo listening"));
    assert!(up, "echo did not start");
    std::thread::spawn(move || for _ in lines {});
    Echo {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).to_string()
}

fn body(response: &str) -> serde_json::Value {
    let (_, body) = response.split_once("\r\n\r\n").expect("head and body");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"))
}

#[test]
fn reflects_the_peer_and_forwarding_headers_only() {
    let echo = start(&[]);
    let response = raw(
        echo.addr,
        b"GET /orders?id=1 HTTP/1.1\r\nHost: orders.internal\r\nX-Forwarded-For: 10.0.0.5, 10.0.1.9\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\nX-Amzn-Trace-Id: Root=1-5f84c7a9-0123456789abcdef01234567\r\nAuthorization: Bearer secret-token\r\nCookie: session=secret\r\nConnection: close\r\n\r\n",
    );
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let reply = body(&response);
    assert_eq!(reply["service"], "hopwatch-echo");
    assert!(reply["peer"]
        .as_str()
        .expect("peer")
        .starts_with("127.0.0.1:"));
    assert_eq!(reply["local"], echo.addr.to_string());
    assert_eq!(reply["path"], "/orders?id=1");
    assert_eq!(reply["host"], "orders.internal");
    assert_eq!(reply["x_forwarded_for"], "10.0.0.5, 10.0.1.9");
    assert_eq!(reply["x_forwarded_proto"], "https");
    assert_eq!(reply["x_forwarded_port"], "443");
    assert_eq!(
        reply["x_amzn_trace_id"],
        "Root=1-5f84c7a9-0123456789abcdef01234567"
    );
    assert!(
        !response.contains("secret"),
        "no other header is reflected: {response}"
    );
    assert!(reply["identity"]["hostname"]
        .as_str()
        .is_some_and(|h| !h.is_empty()));
    assert!(reply["identity"]["task_arn"].is_null());
}

#[test]
fn bounded_request_size() {
    let echo = start(&[]);
    let big_head = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20_000)
    );
    let response = raw(echo.addr, big_head.as_bytes());
    assert!(
        response.starts_with("HTTP/1.1 431"),
        "oversized head: {:.80}",
        response
    );
    let body = "b".repeat(100_000);
    let big_body = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = raw(echo.addr, big_body.as_bytes());
    assert!(
        response.starts_with("HTTP/1.1 413"),
        "oversized body: {:.80}",
        response
    );
    // Still serving after both.
    let ok = raw(
        echo.addr,
        b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_from_ecs_task_metadata() {
    // The ECS agent's metadata endpoint, as documented (task metadata v4), on 127.0.0.1.
    let task = br#"{"Cluster":"arn:aws:ecs:eu-west-1:111122223333:cluster/platform","TaskARN":"arn:aws:ecs:eu-west-1:111122223333:task/platform/0123456789abcdef","AvailabilityZone":"eu-west-1b","Containers":[]}"#;
    let metadata = raw_server(move |stream| {
        let mut response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            task.len()
        )
        .into_bytes();
        response.extend_from_slice(task);
        respond(stream, response)
    })
    .await;
    let echo = tokio::task::spawn_blocking(move || {
        let echo = start(&[(
            "ECS_CONTAINER_METADATA_URI_V4",
            format!("http://{metadata}/v4/abc"),
        )]);
        let response = raw(
            echo.addr,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        body(&response)
    })
    .await
    .expect("join");
    assert_eq!(echo["identity"]["availability_zone"], "eu-west-1b");
    assert_eq!(
        echo["identity"]["cluster"],
        "arn:aws:ecs:eu-west-1:111122223333:cluster/platform"
    );
    assert_eq!(
        echo["identity"]["task_arn"],
        "arn:aws:ecs:eu-west-1:111122223333:task/platform/0123456789abcdef"
    );
}
