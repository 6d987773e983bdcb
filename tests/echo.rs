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
    start_with(env, &[])
}

fn start_with(env: &[(&str, String)], flags: &[&str]) -> Echo {
    let port = refused_port().port();
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--log-format",
        "json",
        "echo",
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
    .args(flags)
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

/// An AWS NLB-style PROXY v2 header: 10.0.1.25:50000 -> 10.0.2.9:80, VPC endpoint TLV.
fn aws_v2(command: u8) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    h.push(0x11);
    let vpce = b"vpce-0a1b2c3d4e5f60718";
    let mut body = vec![10, 0, 1, 25, 10, 0, 2, 9, 0xC3, 0x50, 0x00, 0x50];
    body.push(0xEA);
    body.extend_from_slice(&((vpce.len() + 1) as u16).to_be_bytes());
    body.push(0x01);
    body.extend_from_slice(vpce);
    h.extend_from_slice(&(body.len() as u16).to_be_bytes());
    h.extend_from_slice(&body);
    h
}

#[test]
fn proxy_protocol_headers_are_reported() {
    let echo = start_with(&[], &["--proxy-protocol"]);
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

    let v1 = [
        b"PROXY TCP4 192.0.2.10 10.0.2.9 41000 80\r\n".as_slice(),
        request,
    ]
    .concat();
    let reply = body(&raw(echo.addr, &v1));
    assert_eq!(reply["proxy_protocol"][0]["version"], 1);
    assert_eq!(reply["proxy_protocol"][0]["src"], "192.0.2.10:41000");
    assert!(
        reply["peer"]
            .as_str()
            .expect("peer")
            .starts_with("127.0.0.1:"),
        "the TCP peer is still reported"
    );

    let v2 = [aws_v2(1).as_slice(), request].concat();
    let reply = body(&raw(echo.addr, &v2));
    let pp = &reply["proxy_protocol"][0];
    assert_eq!(pp["version"], 2);
    assert_eq!(pp["command"], "proxy");
    assert_eq!(pp["src"], "10.0.1.25:50000");
    assert_eq!(pp["dst"], "10.0.2.9:80");
    assert_eq!(pp["vpce_id"], "vpce-0a1b2c3d4e5f60718");

    // Stacked: a proxy in front of the NLB's header adds its own, nearest first.
    let stacked = [
        b"PROXY TCP4 10.0.5.5 10.0.2.9 40000 80\r\n".as_slice(),
        &aws_v2(1),
        request,
    ]
    .concat();
    let reply = body(&raw(echo.addr, &stacked));
    assert_eq!(reply["proxy_protocol"].as_array().map(Vec::len), Some(2));
    assert_eq!(reply["proxy_protocol"][0]["src"], "10.0.5.5:40000");
    assert_eq!(
        reply["proxy_protocol"][1]["vpce_id"],
        "vpce-0a1b2c3d4e5f60718"
    );

    // LOCAL (an NLB health check): answered, no caller.
    let local = [aws_v2(0).as_slice(), request].concat();
    let reply = body(&raw(echo.addr, &local));
    assert_eq!(reply["proxy_protocol"][0]["command"], "local");
    assert!(reply["proxy_protocol"][0]["src"].is_null());

    // No header (a direct probe): answered, nothing reported.
    let reply = body(&raw(echo.addr, request));
    assert_eq!(reply["proxy_protocol"], serde_json::json!([]));

    // A broken header: the connection is dropped without an answer, and the server lives on.
    let mut broken = aws_v2(1);
    broken[12] = 0x2F;
    broken.extend_from_slice(request);
    assert_eq!(raw(echo.addr, &broken), "");
    assert!(raw(echo.addr, request).starts_with("HTTP/1.1 200"));
}

/// Sends `request` from `source` (a loopback address of this host) and reads until the
/// responder closes. `Err` when nothing came back before the 5 s read timeout.
fn raw_from(source: [u8; 4], addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(2))?;
    let mut s: TcpStream = socket.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let _ = s.write_all(request);
    let mut out = Vec::new();
    match s.read_to_end(&mut out) {
        Ok(_) => Ok(out),
        // Closed while our request was unread: the kernel answers with a reset.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(out),
        Err(e) => Err(e),
    }
}

#[test]
fn allow_closes_connections_from_other_sources() {
    // Repeatable, CIDR or bare address; 127.0.0.1 (where tests connect from) is in neither.
    let echo = start_with(&[], &["--allow", "10.0.0.0/8", "--allow", "127.0.0.2"]);
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let refused = raw_from([127, 0, 0, 1], echo.addr, request).expect("closed, not hung");
    assert!(
        refused.is_empty(),
        "a source outside --allow got an answer: {}",
        String::from_utf8_lossy(&refused)
    );
    let allowed = String::from_utf8(raw_from([127, 0, 0, 2], echo.addr, request).expect("answer"))
        .expect("utf-8");
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    assert!(body(&allowed)["peer"]
        .as_str()
        .is_some_and(|p| p.starts_with("127.0.0.2:")));
}

#[test]
fn allow_checks_the_tcp_peer_not_the_proxy_header() {
    // Behind an NLB the TCP peer is the NLB node: that is what --allow is about. A PROXY
    // header naming an allowed caller does not let another peer in...
    let echo = start_with(&[], &["--proxy-protocol", "--allow", "127.0.0.2/32"]);
    let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let claims_allowed = [
        b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 80\r\n".as_slice(),
        request,
    ]
    .concat();
    let refused = raw_from([127, 0, 0, 1], echo.addr, &claims_allowed).expect("closed");
    assert!(refused.is_empty(), "{}", String::from_utf8_lossy(&refused));
    // ...and an allowed peer is served whatever caller its header names.
    let from_elsewhere = [
        b"PROXY TCP4 192.0.2.10 127.0.0.1 40000 80\r\n".as_slice(),
        request,
    ]
    .concat();
    let answer =
        String::from_utf8(raw_from([127, 0, 0, 2], echo.addr, &from_elsewhere).expect("answer"))
            .expect("utf-8");
    let reply = body(&answer);
    assert_eq!(reply["proxy_protocol"][0]["src"], "192.0.2.10:40000");
}

#[test]
fn allow_refuses_what_is_not_a_cidr() {
    let out = Command::new(BIN)
        .args(["echo", "--listen", "127.0.0.1:0", "--allow", "10.0.0.0/33"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\"10.0.0.0/33\" is not a CIDR"), "{stderr}");
}

#[test]
fn keep_alive_connections_end_after_a_bounded_number_of_requests() {
    let echo = start(&[]);
    // One more than the bound, pipelined on one connection.
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let all = request.repeat(hopwatch::echo::MAX_REQUESTS_PER_CONNECTION + 1);
    let mut s = TcpStream::connect(echo.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(&all).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the responder closes the connection");
    let text = String::from_utf8_lossy(&out);
    let answers: Vec<&str> = text.split("HTTP/1.1 ").skip(1).collect();
    assert_eq!(answers.len(), hopwatch::echo::MAX_REQUESTS_PER_CONNECTION);
    assert!(answers.iter().all(|a| a.starts_with("200")));
    let last = answers.last().copied().unwrap_or_default();
    assert!(
        last.to_ascii_lowercase().contains("connection: close"),
        "the last answer says the connection ends: {last}"
    );
    assert!(!answers[0]
        .to_ascii_lowercase()
        .contains("connection: close"));
}

/// `--status` stands in for an application failing on its own (the lab's pass-through
/// scenarios): everywhere, or only under `--status-path`, with the reply body unchanged.
#[test]
fn answers_a_chosen_status_everywhere_or_under_a_prefix() {
    let status = |echo: &Echo, path: &str| -> String {
        let response = raw(
            echo.addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(body(&response)["path"], path, "{response}");
        response
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    let everywhere = start_with(&[], &["--status", "429"]);
    assert_eq!(status(&everywhere, "/orders"), "429");
    let prefixed = start_with(&[], &["--status", "500", "--status-path", "/prod/"]);
    assert_eq!(status(&prefixed, "/prod/orders"), "500");
    assert_eq!(status(&prefixed, "/orders"), "200");
    let refused = Command::new(BIN)
        .args(["echo", "--listen", "127.0.0.1:0", "--status", "99"])
        .output()
        .expect("run");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("not an HTTP status"));
}
