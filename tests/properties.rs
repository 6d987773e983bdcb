//! Property tests of the code that reads untrusted input: the config loader, the PROXY
//! protocol parser, the echo responder (over real loopback sockets) and the CloudWatch
//! encoders. Each property runs a bounded number of cases (`PROPTEST_CASES` raises or lowers
//! every one of them at once, e.g. for a longer local run); the whole file takes well under
//! 30 s in a debug build. A case that ever failed is kept below as a named regression test.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use proptest::prelude::*;
use proptest::test_runner::Config as ProptestConfig;

use hopwatch::config::{load_str, CloudWatchDetail, ConfigError};
use hopwatch::echo::proxy_protocol::{self, crc32c, Command, Header, ParseError, V2_SIGNATURE};
use hopwatch::echo::{EchoOptions, MAX_REFLECTED};
use hopwatch::export::cloudwatch::datum::MAX_PAIRS;
use hopwatch::export::cloudwatch::datum::{Value, MAX_DIMENSIONS};
use hopwatch::export::cloudwatch::encode::{self, distribution};
use hopwatch::export::cloudwatch::period::{HopPeriod, Period, Tally};
use hopwatch::export::cloudwatch::{datum, emf};

/// `cases` unless `PROPTEST_CASES` says otherwise. Failures are not persisted to files: a
/// failing case is turned into a named test in this file instead.
fn cases(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Config loader
// ---------------------------------------------------------------------------------------------

/// Every `${NAME}` resolves, so valid seeds stay valid.
fn any_env(name: &str) -> Option<String> {
    (!name.is_empty()).then(|| format!("value-of-{name}"))
}

/// The example configs (one per topology): valid documents to mutate.
fn seeds() -> &'static [(String, String)] {
    static SEEDS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples");
        let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).expect("read example");
                (p.display().to_string(), text)
            })
            .collect();
        out.sort();
        assert!(out.len() >= 6, "expected the six example configs");
        for (name, text) in &out {
            if let Err(e) = load_str(name, text, &any_env) {
                panic!("seed {name} is invalid:\n{e}");
            }
        }
        out
    })
}

/// Pieces that make TOML and hopwatch's schema go wrong in interesting ways.
const TOKENS: &[&str] = &[
    "\"",
    "'",
    "[",
    "]",
    "[[",
    "]]",
    "=",
    "{",
    "}",
    ",",
    "\n",
    "\r\n",
    "\r",
    "#",
    "\t",
    " ",
    "'''",
    "\"\"\"",
    "\\",
    "\\u00e9",
    "\\uD800",
    "é",
    "日本",
    "🦀",
    "\u{0}",
    "\u{feff}",
    "0x",
    "1e999",
    "-",
    "nan",
    "inf",
    "true",
    "${",
    "$$",
    "${API_KEY}",
    "${1}",
    "99999999999999999999",
    "-1",
    "0",
    "\"0s\"",
    "\"1ms\"",
    "\"31s\"",
    "\"1h\"",
    "\"5xx\"",
    "600",
    "interval",
    "timeout",
    "kind",
    "role",
    "url",
    "headers",
    "expect_status",
    "expect_source",
    "name",
    "\"custom\"",
    "\"target\"",
    "\"http://\"",
    "\"https://[::1]:0/\"",
    "[[chain]]",
    "[[chain.hop]]",
    "[agent]",
    "[cloudwatch]",
    "mode = \"emf\"",
    "dimensions = { Chain = \"x\" }",
    "per_address = true",
    "max_body = \"17MiB\"",
    "ca_file = \"nope.pem\"",
    "health_url = 1",
];

#[derive(Debug, Clone)]
enum Edit {
    /// Insert a token at a fraction of the text.
    Insert(f64, &'static str),
    /// Delete `len` characters at a fraction of the text.
    Delete(f64, usize),
    /// Duplicate the line at a fraction of the lines.
    DuplicateLine(f64),
    /// Swap two lines.
    SwapLines(f64, f64),
    /// Cut the text at a fraction.
    Truncate(f64),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (0.0..1.0f64, prop::sample::select(TOKENS)).prop_map(|(at, t)| Edit::Insert(at, t)),
        2 => (0.0..1.0f64, 1usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        1 => (0.0..1.0f64).prop_map(Edit::DuplicateLine),
        1 => (0.0..1.0f64, 0.0..1.0f64).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        1 => (0.0..1.0f64).prop_map(Edit::Truncate),
    ]
}

/// Char index → byte offset, so edits never split a character.
fn byte_at(text: &str, fraction: f64) -> usize {
    let chars = text.chars().count();
    let index = ((chars as f64) * fraction) as usize;
    text.char_indices()
        .nth(index)
        .map_or(text.len(), |(i, _)| i)
}

fn apply(text: &str, edit: &Edit) -> String {
    let mut out = text.to_string();
    match edit {
        Edit::Insert(at, token) => out.insert_str(byte_at(&out, *at), token),
        Edit::Delete(at, n) => {
            let start = byte_at(&out, *at);
            let end = out[start..]
                .char_indices()
                .nth(*n)
                .map_or(out.len(), |(i, _)| start + i);
            out.replace_range(start..end, "");
        }
        Edit::DuplicateLine(at) => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let i = ((lines.len() as f64) * at) as usize % lines.len();
            lines.insert(i, lines[i]);
            out = lines.join("\n");
        }
        Edit::SwapLines(a, b) => {
            let mut lines: Vec<&str> = text.split('\n').collect();
            let n = lines.len();
            lines.swap(((n as f64) * a) as usize % n, ((n as f64) * b) as usize % n);
            out = lines.join("\n");
        }
        Edit::Truncate(at) => out.truncate(byte_at(&out, *at)),
    }
    out
}

/// Loads `text` and checks what any outcome must satisfy: no panic (the property runner
/// reports one), and every problem located inside the text as `file:line:column: `.
fn check_loader(file: &str, text: &str) -> Result<(), TestCaseError> {
    let outcome = load_str(file, text, &any_env);
    let problems = match outcome {
        Ok(config) => {
            prop_assert!(!config.chains.is_empty(), "a config without chains loaded");
            return Ok(());
        }
        Err(ConfigError::Invalid(problems)) => problems,
        Err(other) => return Err(TestCaseError::fail(format!("not a located error: {other}"))),
    };
    prop_assert!(!problems.is_empty(), "an Invalid error with no problem");
    // Lines as the loader counts them: split on '\n' only.
    let lines: Vec<&str> = text.split('\n').collect();
    for p in &problems {
        prop_assert_eq!(&p.file, file);
        prop_assert!(
            p.line >= 1 && p.line <= lines.len(),
            "line {} of {}",
            p.line,
            lines.len()
        );
        let width = lines[p.line - 1].chars().count();
        prop_assert!(
            p.column >= 1 && p.column <= width + 1,
            "column {} on a line of {width} characters: {p}",
            p.column
        );
        let shown = p.to_string();
        let prefix = format!("{file}:{}:{}: ", p.line, p.column);
        prop_assert!(
            shown.starts_with(&prefix),
            "{shown:?} does not start with {prefix:?}"
        );
        prop_assert!(!p.message.is_empty(), "an empty message: {shown}");
    }
    let order: Vec<_> = problems.iter().map(|p| (p.line, p.column)).collect();
    let mut sorted = order.clone();
    sorted.sort();
    prop_assert_eq!(order, sorted, "problems are in file order");
    Ok(())
}

proptest! {
    #![proptest_config(cases(1000))]

    /// Arbitrary text (any Unicode, control characters included) never panics the loader.
    #[test]
    fn config_loader_survives_arbitrary_text(text in "\\PC{0,300}|[\\x00-\\x7f]{0,300}") {
        check_loader("any.toml", &text)?;
    }

    /// Valid configs with a few edits: every problem is located in the edited text.
    #[test]
    fn config_loader_locates_every_problem_of_mutated_configs(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let (file, text) = seed.get(seeds());
        let mutated = edits.iter().fold(text.clone(), |t, e| apply(&t, e));
        check_loader(file, &mutated)?;
    }
}

/// Corners the random edits reach only now and then: problems located on lines holding
/// multi-byte characters, a byte-order mark, an unpaired surrogate escape.
#[test]
fn config_problem_positions_with_multibyte_text() {
    for text in [
        "[[chain]]\nname = \"é\"\nkind = \"日本\"\n",
        "[[chain]]\nname = \"🦀\"\n[[chain.hop]]\nname = 1\n",
        "[agent]\ninterval = \"1ms\" # é\ntimeout = \"🦀\"",
        "\u{feff}[agent]",
        "a = \"\\uD800\"",
    ] {
        if let Err(e) = check_loader("mb.toml", text) {
            panic!("{text:?}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PROXY protocol
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum V1 {
    Tcp4(Ipv4Addr, Ipv4Addr, u16, u16),
    Tcp6(Ipv6Addr, Ipv6Addr, u16, u16),
    Unknown(String),
}

impl V1 {
    fn bytes(&self) -> Vec<u8> {
        match self {
            V1::Tcp4(s, d, sp, dp) => format!("PROXY TCP4 {s} {d} {sp} {dp}\r\n"),
            V1::Tcp6(s, d, sp, dp) => format!("PROXY TCP6 {s} {d} {sp} {dp}\r\n"),
            V1::Unknown(rest) => format!("PROXY UNKNOWN{rest}\r\n"),
        }
        .into_bytes()
    }

    fn expected(&self) -> Header {
        let (src, dst) = match self {
            V1::Tcp4(s, d, sp, dp) => (
                Some(SocketAddr::new(IpAddr::V4(*s), *sp)),
                Some(SocketAddr::new(IpAddr::V4(*d), *dp)),
            ),
            V1::Tcp6(s, d, sp, dp) => (
                Some(SocketAddr::new(IpAddr::V6(*s), *sp)),
                Some(SocketAddr::new(IpAddr::V6(*d), *dp)),
            ),
            V1::Unknown(_) => (None, None),
        };
        Header {
            version: 1,
            command: Command::Proxy,
            src,
            dst,
            vpce_id: None,
            crc_ok: None,
        }
    }
}

fn v1() -> impl Strategy<Value = V1> {
    prop_oneof![
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| V1::Tcp4(s.into(), d.into(), sp, dp)),
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| V1::Tcp6(s.into(), d.into(), sp, dp)),
        // "PROXY UNKNOWN" may carry anything up to the line limit (spec §2.1).
        "( [ -~]{0,80})?".prop_map(V1::Unknown),
    ]
}

#[derive(Debug, Clone)]
enum Addresses {
    Unspec,
    Inet([u8; 4], [u8; 4], u16, u16),
    Inet6([u8; 16], [u8; 16], u16, u16),
    /// Two 108-byte socket paths; reported as no address.
    Unix(Vec<u8>),
}

#[derive(Debug, Clone)]
enum Tlv {
    /// AWS TLV 0xEA, subtype 0x01: the VPC endpoint id.
    Vpce(String),
    /// AWS TLV with another subtype (or empty): ignored.
    AwsOther(Vec<u8>),
    /// Any other type (NOOP, ALPN, authority, ...), ignored.
    Other(u8, Vec<u8>),
}

#[derive(Debug, Clone)]
struct V2 {
    command: u8,
    transport: u8,
    addresses: Addresses,
    tlvs: Vec<Tlv>,
    /// Add a correct CRC32C TLV at this index of the TLV list.
    crc_at: Option<prop::sample::Index>,
}

fn tlv() -> impl Strategy<Value = Tlv> {
    prop_oneof![
        "vpce-[0-9a-f]{1,17}".prop_map(Tlv::Vpce),
        prop_oneof![
            Just(Vec::new()),
            (2u8..=255, prop::collection::vec(any::<u8>(), 0..20)).prop_map(|(sub, rest)| [
                vec![sub],
                rest
            ]
            .concat()),
        ]
        .prop_map(Tlv::AwsOther),
        (
            any::<u8>().prop_filter("CRC and AWS are modelled apart", |t| *t != 0x03
                && *t != 0xEA),
            prop::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(t, v)| Tlv::Other(t, v)),
    ]
}

fn v2() -> impl Strategy<Value = V2> {
    let addresses = prop_oneof![
        Just(Addresses::Unspec),
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| Addresses::Inet(s, d, sp, dp)),
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<u16>()
        )
            .prop_map(|(s, d, sp, dp)| Addresses::Inet6(s, d, sp, dp)),
        prop::collection::vec(any::<u8>(), 216).prop_map(Addresses::Unix),
    ];
    (
        0u8..=1,
        0u8..=2,
        addresses,
        prop::collection::vec(tlv(), 0..6),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(command, transport, addresses, tlvs, crc_at)| V2 {
            command,
            transport,
            addresses,
            tlvs,
            crc_at,
        })
}

impl V2 {
    fn bytes(&self) -> Vec<u8> {
        let (family, mut body) = match &self.addresses {
            Addresses::Unspec => (0u8, Vec::new()),
            Addresses::Inet(s, d, sp, dp) => (
                1,
                [&s[..], &d[..], &sp.to_be_bytes(), &dp.to_be_bytes()].concat(),
            ),
            Addresses::Inet6(s, d, sp, dp) => (
                2,
                [&s[..], &d[..], &sp.to_be_bytes(), &dp.to_be_bytes()].concat(),
            ),
            Addresses::Unix(paths) => (3, paths.clone()),
        };
        let mut tlvs: Vec<(u8, Vec<u8>)> = self
            .tlvs
            .iter()
            .map(|t| match t {
                Tlv::Vpce(id) => (0xEA, [&[0x01][..], id.as_bytes()].concat()),
                Tlv::AwsOther(v) => (0xEA, v.clone()),
                Tlv::Other(t, v) => (*t, v.clone()),
            })
            .collect();
        let crc_index = self.crc_at.map(|i| i.index(tlvs.len() + 1));
        if let Some(i) = crc_index {
            tlvs.insert(i, (0x03, vec![0; 4]));
        }
        let mut crc_offset = None;
        for (i, (t, v)) in tlvs.iter().enumerate() {
            if Some(i) == crc_index {
                crc_offset = Some(16 + body.len() + 3);
            }
            body.push(*t);
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v);
        }
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | self.command);
        out.push(family << 4 | self.transport);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&body);
        if let Some(at) = crc_offset {
            let crc = crc32c(&out);
            out[at..at + 4].copy_from_slice(&crc.to_be_bytes());
        }
        out
    }

    fn expected(&self) -> Header {
        let proxy = self.command == 1;
        let (src, dst) = match (&self.addresses, proxy) {
            (Addresses::Inet(s, d, sp, dp), true) => (
                Some(SocketAddr::new(IpAddr::from(*s), *sp)),
                Some(SocketAddr::new(IpAddr::from(*d), *dp)),
            ),
            (Addresses::Inet6(s, d, sp, dp), true) => (
                Some(SocketAddr::new(IpAddr::from(*s), *sp)),
                Some(SocketAddr::new(IpAddr::from(*d), *dp)),
            ),
            _ => (None, None),
        };
        Header {
            version: 2,
            command: if proxy {
                Command::Proxy
            } else {
                Command::Local
            },
            src,
            dst,
            // The last one wins.
            vpce_id: self.tlvs.iter().rev().find_map(|t| match t {
                Tlv::Vpce(id) => Some(id.clone()),
                _ => None,
            }),
            crc_ok: self.crc_at.map(|_| true),
        }
    }
}

#[derive(Debug, Clone)]
enum AnyHeader {
    V1(V1),
    V2(V2),
}

impl AnyHeader {
    fn bytes(&self) -> Vec<u8> {
        match self {
            AnyHeader::V1(h) => h.bytes(),
            AnyHeader::V2(h) => h.bytes(),
        }
    }
    fn expected(&self) -> Header {
        match self {
            AnyHeader::V1(h) => h.expected(),
            AnyHeader::V2(h) => h.expected(),
        }
    }
}

fn any_header() -> impl Strategy<Value = AnyHeader> {
    prop_oneof![v1().prop_map(AnyHeader::V1), v2().prop_map(AnyHeader::V2)]
}

/// Bytes that resemble headers: built ones with flipped bytes, cut, or with junk after.
fn header_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        (
            any_header(),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)
        )
            .prop_map(|(h, flips)| {
                let mut b = h.bytes();
                for (i, v) in flips {
                    let i = i.index(b.len());
                    b[i] = v;
                }
                b
            }),
        (any_header(), prop::collection::vec(any::<u8>(), 0..40)).prop_map(|(h, junk)| [
            h.bytes(),
            junk
        ]
        .concat()),
        (
            prop::sample::select(vec![&b"PROXY "[..], &V2_SIGNATURE[..]]),
            prop::collection::vec(any::<u8>(), 0..200)
        )
            .prop_map(|(start, rest)| [start, &rest[..]].concat()),
    ]
}

proptest! {
    #![proptest_config(cases(2000))]

    /// Whatever the bytes: no panic, never more bytes claimed than given, and a header is
    /// decided by its own bytes alone (parsing just them gives the same answer).
    #[test]
    fn proxy_parser_survives_any_bytes(bytes in header_like_bytes()) {
        let _ = proxy_protocol::looks_like_header(&bytes);
        if let Ok((header, n)) = proxy_protocol::parse(&bytes) {
            prop_assert!(n <= bytes.len());
            prop_assert_eq!(proxy_protocol::parse(&bytes[..n]), Ok((header, n)));
        }
        if let Ok((headers, n)) = proxy_protocol::parse_stacked(&bytes) {
            prop_assert!(n <= bytes.len());
            prop_assert!(!headers.is_empty());
        }
    }

    /// A header built to the spec parses back to what it says, whatever follows it.
    #[test]
    fn proxy_headers_round_trip(header in any_header(), after in prop::collection::vec(any::<u8>(), 0..32)) {
        let bytes = header.bytes();
        let n = bytes.len();
        prop_assert_eq!(proxy_protocol::parse(&bytes), Ok((header.expected(), n)));
        let followed = [bytes, after].concat();
        prop_assert_eq!(proxy_protocol::parse(&followed), Ok((header.expected(), n)));
    }

    /// Every proper prefix of a header is `Incomplete`: never accepted, never "invalid"
    /// (the caller would drop a connection that only had to wait for more bytes).
    #[test]
    fn proxy_header_truncations_are_incomplete(header in any_header()) {
        let bytes = header.bytes();
        for cut in 0..bytes.len() {
            prop_assert_eq!(
                proxy_protocol::parse(&bytes[..cut]),
                Err(ParseError::Incomplete),
                "cut at {} of {}", cut, bytes.len()
            );
        }
    }

    /// Stacked headers come back nearest first; a stack cut anywhere yields either
    /// `Incomplete` or exactly the headers that are whole.
    #[test]
    fn proxy_stacks_round_trip_and_truncate(
        stack in prop::collection::vec(any_header(), 1..4),
        request in prop_oneof![Just(&b""[..]), Just(&b"GET / HTTP/1.1\r\n\r\n"[..])],
    ) {
        let parts: Vec<Vec<u8>> = stack.iter().map(AnyHeader::bytes).collect();
        let expected: Vec<Header> = stack.iter().map(AnyHeader::expected).collect();
        let all = parts.concat();
        let bytes = [&all[..], request].concat();
        prop_assert_eq!(proxy_protocol::parse_stacked(&bytes), Ok((expected.clone(), all.len())));
        let mut boundaries = vec![0];
        for p in &parts {
            boundaries.push(boundaries.last().copied().unwrap_or(0) + p.len());
        }
        for cut in 0..all.len() {
            match proxy_protocol::parse_stacked(&all[..cut]) {
                Err(ParseError::Incomplete) => {}
                Ok((headers, used)) => {
                    let whole = boundaries.iter().position(|b| *b == cut);
                    prop_assert_eq!(Some(headers.len()), whole, "cut {} at no boundary", cut);
                    prop_assert_eq!(used, cut);
                    prop_assert_eq!(&headers[..], &expected[..headers.len()]);
                }
                Err(e) => prop_assert!(false, "cut at {cut}: {e}"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Echo responder, over real loopback sockets
// ---------------------------------------------------------------------------------------------

/// Worker threads of the echo under test carry this name, so a panic in one is noticed even
/// though tokio catches it.
const ECHO_THREADS: &str = "echo-under-test";
static ECHO_PANICS: AtomicUsize = AtomicUsize::new(0);

struct Echo {
    plain: SocketAddr,
    proxy: SocketAddr,
}

/// Two in-process responders (without and with `--proxy-protocol`) on 127.0.0.1, alive for
/// the whole test binary.
fn echo() -> &'static Echo {
    static ECHO: OnceLock<Echo> = OnceLock::new();
    ECHO.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with(ECHO_THREADS))
            {
                ECHO_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name(ECHO_THREADS)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let (_stop, stop_rx) = tokio::sync::watch::channel(false);
                let mut addrs = Vec::new();
                for proxy_protocol in [false, true] {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind");
                    addrs.push(listener.local_addr().expect("addr"));
                    let options = EchoOptions {
                        proxy_protocol,
                        ..EchoOptions::default()
                    };
                    tokio::spawn(hopwatch::echo::serve(listener, options, stop_rx.clone()));
                }
                let _ = tx.send(Echo {
                    plain: addrs[0],
                    proxy: addrs[1],
                });
                // Serve until the test binary exits.
                std::future::pending::<()>().await;
            });
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("echo started")
    })
}

/// How long the responder may take to answer (or close) once a client has sent everything
/// and shut down its side. Generous for a loaded machine: answers take milliseconds.
const ANSWER_BOUND: Duration = Duration::from_secs(5);

/// Sends `bytes`, shuts down the sending side, and reads until the responder closes.
/// Fails if that takes longer than [`ANSWER_BOUND`] or the responder panicked.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Result<Vec<u8>, TestCaseError> {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| TestCaseError::fail(format!("connect: {e}")))?;
    s.set_read_timeout(Some(ANSWER_BOUND)).expect("timeout");
    // The responder may close early (a bad head): a failed write is an answer too.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => {
                return Err(TestCaseError::fail(format!(
                    "no answer and no close after {:?} ({e}); got {} bytes",
                    start.elapsed(),
                    out.len()
                )))
            }
        }
        prop_assert!(
            start.elapsed() < ANSWER_BOUND,
            "still answering after {:?}",
            start.elapsed()
        );
    }
    prop_assert_eq!(
        ECHO_PANICS.load(Ordering::SeqCst),
        0,
        "the responder panicked"
    );
    Ok(out)
}

/// One parsed response.
struct Response {
    status: u16,
    body: Vec<u8>,
}

/// Splits a byte stream of responses (`heads_only[i]`: the i-th answers a HEAD, no body).
fn responses(mut raw: &[u8], heads_only: &[bool]) -> Result<Vec<Response>, String> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("unterminated head: {:?}", String::from_utf8_lossy(raw)))?;
        let head = std::str::from_utf8(&raw[..end]).map_err(|e| e.to_string())?;
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {status_line:?}"))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(": "))
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect();
        let length = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok())
            .unwrap_or(0);
        let length = if heads_only.get(out.len()).copied().unwrap_or(false) || status == 100 {
            0
        } else {
            length
        };
        let body_start = end + 4;
        let body = raw
            .get(body_start..body_start + length)
            .ok_or_else(|| "body cut short".to_string())?
            .to_vec();
        raw = &raw[body_start + length..];
        if status != 100 {
            out.push(Response { status, body });
        }
    }
    Ok(out)
}

/// Fragments of HTTP (and PROXY) that make a parser's life hard, to string together.
fn http_soup() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: &[&str] = &[
        "GET ",
        "POST ",
        "HEAD ",
        "OPTIONS ",
        "CONNECT ",
        "PROXY ",
        "/",
        "/a?b=c",
        "*",
        " HTTP/1.1",
        " HTTP/1.0",
        " HTTP/2.0",
        "\r\n",
        "\n",
        "\r",
        "Host: x",
        "Host:",
        "Content-Length: 5",
        "Content-Length: -1",
        "Content-Length: 99999999999999999999",
        "Content-Length: 3, 4",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip, chunked",
        "Expect: 100-continue",
        "Connection: close",
        "Connection: upgrade",
        "Upgrade: websocket",
        "X-Forwarded-For: ",
        ": no-name",
        " folded",
        "0\r\n\r\n",
        "5\r\nhello\r\n",
        "ffffffffffffffffff\r\n",
        "hello",
        "\0",
        "\u{7f}",
        "é",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY UNKNOWN\r\n",
        "\r\n\r\n\0\r\nQUIT\n",
    ];
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(PIECES).prop_map(|p| p.as_bytes().to_vec()),
            1 => prop::collection::vec(any::<u8>(), 1..16),
        ],
        0..40,
    )
    .prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(cases(400))]

    /// Any bytes, with and without `--proxy-protocol`: the responder answers in HTTP/1.x or
    /// closes, within the bound, and never panics.
    #[test]
    fn echo_answers_or_closes_on_any_bytes(
        bytes in prop_oneof![http_soup(), prop::collection::vec(any::<u8>(), 0..2048)],
        proxy in any::<bool>(),
    ) {
        let e = echo();
        let out = exchange(if proxy { e.proxy } else { e.plain }, &bytes)?;
        prop_assert!(
            out.is_empty() || out.starts_with(b"HTTP/1."),
            "not HTTP: {:?}", String::from_utf8_lossy(&out[..out.len().min(200)])
        );
    }
}

/// A well-formed request with documented headers, undocumented ones and a body; every
/// undocumented value and the body carry a marker that must never come back.
#[derive(Debug, Clone)]
struct EchoRequest {
    method: String,
    target: String,
    host: Option<String>,
    documented: Vec<(&'static str, String)>,
    undocumented: Vec<(String, String)>,
    body: Option<(bool, Vec<u8>)>,
}

const MARKER: &str = "UNREFLECTED";
const DOCUMENTED: [&str; 4] = [
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-amzn-trace-id",
];
const REPLY_KEYS: [&str; 13] = [
    "service",
    "peer",
    "local",
    "method",
    "path",
    "host",
    "x_forwarded_for",
    "x_forwarded_proto",
    "x_forwarded_port",
    "x_amzn_trace_id",
    "proxy_protocol",
    "delay_us",
    "identity",
];

fn echo_request() -> impl Strategy<Value = EchoRequest> {
    let method = prop_oneof![
        prop::sample::select(vec![
            "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"
        ])
        .prop_map(str::to_string),
        "[A-Z]{1,1200}",
    ];
    let segment = "[A-Za-z0-9._~!$&'()*+,;=:@%-]{0,1200}";
    let target = (
        segment,
        prop::option::of("[A-Za-z0-9._~!$&'()*+,;=:@/?-]{0,200}"),
    )
        .prop_map(|(path, query)| match query {
            Some(q) => format!("/{path}?{q}"),
            None => format!("/{path}"),
        });
    // No spaces: header values lose surrounding whitespace on the way.
    let value = "[!-~]{1,1100}";
    let documented = prop::collection::vec(
        (prop::sample::select(&DOCUMENTED[..]), "[!-~]{1,300}"),
        0..4,
    )
    .prop_map(|v| {
        // One of each: the echo reflects the first value of a header.
        let mut seen = BTreeSet::new();
        v.into_iter()
            .filter(|(k, _)| seen.insert(*k))
            .collect::<Vec<_>>()
    });
    let reserved = [
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "expect",
        "upgrade",
        "te",
        "keep-alive",
        "trailer",
    ];
    let undocumented = prop::collection::vec(
        (
            prop_oneof![
                prop::sample::select(vec!["x-api-key", "authorization", "cookie", "x-secret"])
                    .prop_map(str::to_string),
                "[a-z][a-z0-9-]{0,24}",
            ]
            .prop_filter("documented or framing", move |n| {
                !DOCUMENTED.contains(&n.as_str()) && !reserved.contains(&n.as_str())
            }),
            "[!-~]{0,60}",
        ),
        0..6,
    );
    let body = prop::option::of((any::<bool>(), prop::collection::vec(any::<u8>(), 0..2048)));
    (
        method,
        target,
        prop::option::of(value),
        documented,
        undocumented,
        body,
    )
        .prop_map(
            |(method, target, host, documented, undocumented, body)| EchoRequest {
                // CONNECT wants a host:port target; every other method is answered alike.
                method: if method == "CONNECT" {
                    "GET".to_string()
                } else {
                    method
                },
                target,
                host,
                documented,
                undocumented,
                body,
            },
        )
}

impl EchoRequest {
    fn bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        if let Some(h) = &self.host {
            head.push_str(&format!("Host: {h}\r\n"));
        }
        for (k, v) in &self.documented {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        for (k, v) in &self.undocumented {
            head.push_str(&format!("{k}: {MARKER}{v}\r\n"));
        }
        let mut body = Vec::new();
        match &self.body {
            None => {}
            Some((chunked, content)) => {
                let content = [MARKER.as_bytes(), content].concat();
                if *chunked {
                    head.push_str("Transfer-Encoding: chunked\r\n");
                    for part in content.chunks(700) {
                        body.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                        body.extend_from_slice(part);
                        body.extend_from_slice(b"\r\n");
                    }
                    body.extend_from_slice(b"0\r\n\r\n");
                } else {
                    head.push_str(&format!("Content-Length: {}\r\n", content.len()));
                    body = content;
                }
            }
        }
        head.push_str("\r\n");
        [head.into_bytes(), body].concat()
    }

    fn reflected(&self, name: &str) -> Option<String> {
        self.documented
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| cut(v))
    }
}

fn cut(text: &str) -> String {
    text.chars().take(MAX_REFLECTED).collect()
}

/// Checks one answer to `request` (seen from `peer`): exactly the documented fields, the
/// values sent (cut to their bound), nothing undocumented.
fn check_reply(
    request: &EchoRequest,
    response: &Response,
    proxy: Option<&Header>,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(response.status, 200);
    if request.method == "HEAD" {
        prop_assert!(response.body.is_empty());
        return Ok(());
    }
    let reply: serde_json::Value = serde_json::from_slice(&response.body)
        .map_err(|e| TestCaseError::fail(format!("not JSON ({e})")))?;
    let keys: BTreeSet<&str> = reply
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    prop_assert_eq!(keys, REPLY_KEYS.into_iter().collect::<BTreeSet<_>>());
    let identity: BTreeSet<&str> = reply["identity"]
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    prop_assert_eq!(
        identity,
        BTreeSet::from(["hostname", "task_arn", "cluster", "availability_zone"])
    );
    prop_assert_eq!(&reply["service"], "hopwatch-echo");
    prop_assert!(reply["peer"]
        .as_str()
        .is_some_and(|p| p.starts_with("127.0.0.1:")));
    prop_assert_eq!(
        reply["method"].as_str().map(str::to_string),
        Some(cut(&request.method))
    );
    prop_assert_eq!(
        reply["path"].as_str().map(str::to_string),
        Some(cut(&request.target))
    );
    prop_assert_eq!(
        reply["host"].as_str().map(str::to_string),
        request.host.as_deref().map(cut)
    );
    for (name, key) in DOCUMENTED.iter().zip([
        "x_forwarded_for",
        "x_forwarded_proto",
        "x_forwarded_port",
        "x_amzn_trace_id",
    ]) {
        prop_assert_eq!(
            reply[key].as_str().map(str::to_string),
            request.reflected(name),
            "{}",
            key
        );
    }
    let reported = reply["proxy_protocol"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    match proxy {
        None => prop_assert!(reported.is_empty()),
        Some(h) => {
            prop_assert_eq!(reported.len(), 1);
            prop_assert_eq!(
                &reported[0]["src"],
                &serde_json::json!(h.src.map(|a| a.to_string()))
            );
            prop_assert_eq!(&reported[0]["vpce_id"], &serde_json::json!(h.vpce_id));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(cases(300))]

    /// Pipelined requests on one connection: each answered, in order, with exactly the
    /// documented fields; no undocumented header and no body byte comes back.
    #[test]
    fn echo_reflects_only_documented_fields(requests in prop::collection::vec(echo_request(), 1..4)) {
        let bytes: Vec<u8> = requests.iter().flat_map(EchoRequest::bytes).collect();
        let out = exchange(echo().plain, &bytes)?;
        prop_assert!(
            !out.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()),
            "an undocumented field came back"
        );
        let heads: Vec<bool> = requests.iter().map(|r| r.method == "HEAD").collect();
        let answers = responses(&out, &heads).map_err(TestCaseError::fail)?;
        prop_assert_eq!(answers.len(), requests.len());
        for (request, response) in requests.iter().zip(&answers) {
            check_reply(request, response, None)?;
        }
    }

    /// With `--proxy-protocol`: the header sent before the request is reported, alongside
    /// the same documented fields.
    #[test]
    fn echo_reports_the_proxy_header_it_was_sent(header in any_header(), mut request in echo_request()) {
        // A request that starts with "PROXY " is a broken PROXY header: dropped, as it must be.
        if request.method.starts_with("PROXY") {
            request.method = "GET".to_string();
        }
        let bytes = [header.bytes(), request.bytes()].concat();
        let out = exchange(echo().proxy, &bytes)?;
        let answers = responses(&out, &[request.method == "HEAD"]).map_err(TestCaseError::fail)?;
        prop_assert_eq!(answers.len(), 1);
        let expected = header.expected();
        // The echo reports the nearest header that named a caller; LOCAL names none.
        let report = (expected.command == Command::Proxy).then_some(&expected);
        if report.is_none() {
            let reply: serde_json::Value = serde_json::from_slice(&answers[0].body).unwrap_or_default();
            if request.method != "HEAD" {
                prop_assert_eq!(&reply["proxy_protocol"][0]["command"], "local");
            }
            return Ok(());
        }
        check_reply(&request, &answers[0], report)?;
    }
}

// ---------------------------------------------------------------------------------------------
// CloudWatch encoders
// ---------------------------------------------------------------------------------------------

/// A latency histogram as a period keeps it (`HopPeriod`): microseconds, 3 digits, growing.
fn histogram(samples_us: &[u64]) -> Histogram<u32> {
    let mut h = Histogram::<u32>::new(3).expect("3 significant digits");
    h.auto(true);
    for us in samples_us {
        if h.record(*us).is_err() {
            h.saturating_record(*us);
        }
    }
    h
}

/// Latencies in microseconds: fast, typical, slow, and spread over hours.
fn latencies() -> impl Strategy<Value = Vec<u64>> {
    let one = prop_oneof![
        1u64..2_000,
        1_000u64..200_000,
        1u64..30_000_000,
        1u64..=u64::from(u32::MAX),
    ];
    prop_oneof![
        prop::collection::vec(one.clone(), 1..50),
        prop::collection::vec(one, 50..4000),
    ]
}

/// The relative precision of a 3-digit histogram's representative of a value.
const HISTOGRAM_PRECISION: f64 = 1e-3;

proptest! {
    #![proptest_config(cases(300))]

    /// Any sample set fits at most 150 (or `max`) pairs, counts add up to the samples, every
    /// number is finite, values ascend within [min, max] and the sum stays exact.
    #[test]
    fn distribution_keeps_count_sum_and_bounds(samples in latencies(), max in prop_oneof![Just(MAX_PAIRS), 1usize..400]) {
        let h = histogram(&samples);
        let d = distribution(&h, max).ok_or_else(|| TestCaseError::fail("no distribution"))?;
        prop_assert!(d.values.len() <= max.min(MAX_PAIRS));
        prop_assert!(!d.values.is_empty());
        prop_assert_eq!(d.values.len(), d.counts.len());
        prop_assert_eq!(d.sample_count(), samples.len() as f64);
        prop_assert!(d.values.iter().chain(&d.counts).all(|v| v.is_finite()));
        prop_assert!(d.counts.iter().all(|c| *c >= 1.0));
        prop_assert!(d.values.windows(2).all(|w| w[0] < w[1]), "ascending: {:?}", d.values);
        prop_assert!(d.max_relative_error.is_finite() && d.max_relative_error >= 0.0);
        let min = samples.iter().copied().min().unwrap_or(0) as f64 / 1000.0;
        let max_ms = samples.iter().copied().max().unwrap_or(0) as f64 / 1000.0;
        let slack = HISTOGRAM_PRECISION + 1e-9;
        for v in &d.values {
            prop_assert!(
                *v >= min * (1.0 - slack) && *v <= max_ms * (1.0 + slack),
                "{v} outside [{min}, {max_ms}]"
            );
        }
        let sum: f64 = d.values.iter().zip(&d.counts).map(|(v, c)| v * c).sum();
        let exact: f64 = samples.iter().map(|us| *us as f64 / 1000.0).sum();
        prop_assert!((sum - exact).abs() <= exact * slack, "sum {sum} vs {exact}");
    }
}

fn tally() -> impl Strategy<Value = Tally> {
    (0u64..250, 0u64..250).prop_map(|(zeros, ones)| Tally { zeros, ones })
}

const CLASSES: [&str; 5] = ["ok", "timeout", "connect_timeout", "http_status", "reset"];

/// One hop of a period: latency samples (µs), probes by class, and the `HopUp`,
/// `BrokenHop`, `HealthCheckUp` and `UnexpectedSource` tallies.
type HopSpec = (Vec<u64>, BTreeMap<&'static str, u64>, [Tally; 4]);

fn hop_period() -> impl Strategy<Value = HopSpec> {
    (
        prop_oneof![Just(Vec::new()), latencies()],
        prop::collection::btree_map(prop::sample::select(&CLASSES[..]), 1u64..500, 0..4),
        [tally(), tally(), tally(), tally()],
    )
}

/// Probe counts keyed by class name, as the period keeps them (indexed by outcome).
fn counts_by_class(
    results: &BTreeMap<&'static str, u64>,
) -> [u64; hopwatch::probe::Outcome::ALL.len()] {
    use hopwatch::probe::Outcome;
    let mut counts = [0; Outcome::ALL.len()];
    for (class, n) in results {
        let outcome = Outcome::ALL.iter().find(|o| o.as_str() == *class);
        counts[outcome.expect("a class of CLASSES").index()] = *n;
    }
    counts
}

fn build_period(start: SystemTime, hops: &[HopSpec], chain_up: Tally) -> Period {
    let mut period = Period {
        start,
        hops: BTreeMap::new(),
        chains: BTreeMap::new(),
        reasons: BTreeMap::new(),
    };
    for (i, (samples, results, [up, broken, health_up, unexpected_source])) in
        hops.iter().enumerate()
    {
        period.hops.insert(
            ("orders".to_string(), format!("hop-{i}")),
            HopPeriod {
                latency: histogram(samples),
                results: counts_by_class(results),
                up: *up,
                broken: *broken,
                health_up: *health_up,
                unexpected_source: *unexpected_source,
                last: None,
                code: None,
                outermost: i == 0,
            },
        );
    }
    if chain_up.total() > 0 {
        period.chains.insert("orders".to_string(), chain_up);
    }
    period
}

fn count_of(v: &serde_json::Value) -> Result<usize, TestCaseError> {
    match v {
        serde_json::Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => Ok(1),
        serde_json::Value::Array(a) => {
            prop_assert!(
                a.len() <= emf::MAX_VALUES,
                "{} values on one EMF line",
                a.len()
            );
            prop_assert!(a.iter().all(|x| x.as_f64().is_some_and(f64::is_finite)));
            Ok(a.len())
        }
        other => Err(TestCaseError::fail(format!("not a metric value: {other}"))),
    }
}

proptest! {
    #![proptest_config(cases(200))]

    /// A period of arbitrary hops becomes datums CloudWatch accepts (≤ 150 pairs, finite, ≤ 30
    /// dimensions) and EMF lines (≤ 100 values a metric) that lose and double no sample, at
    /// either `[cloudwatch] detail`: at `chain`, a hop with nothing wrong publishes nothing of
    /// its own and keeps every figure on its EMF lines as properties, and the chain's
    /// `Latency` and `ProbeFailures` are its outermost hop's samples and all its hops' failures.
    #[test]
    fn periods_encode_within_limits_without_losing_samples(
        hops in prop::collection::vec(hop_period(), 1..4),
        chain_up in tally(),
        extra in 0usize..=hopwatch::config::MAX_EXTRA_DIMENSIONS,
        detail in prop::sample::select(CloudWatchDetail::ALL),
    ) {
        let now = SystemTime::now();
        let start = UNIX_EPOCH + Duration::from_secs(now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) / 60 * 60);
        let period = build_period(start, &hops, chain_up);
        let extra: Vec<(String, String)> = (0..extra).map(|i| (format!("D{i}"), "v".to_string())).collect();

        let datums = encode::datums(&period, &extra, 60, detail);
        for d in &datums {
            prop_assert_eq!(d.check(now), Ok(()), "{}", d.metric);
            prop_assert!(d.dimensions.len() <= MAX_DIMENSIONS);
            if let Value::Distribution(dist) = &d.value {
                prop_assert!(dist.values.len() <= MAX_PAIRS);
            }
        }
        for batch in datum::batches(datums.clone()) {
            prop_assert!(batch.len() <= datum::MAX_DATUMS);
        }
        // `hop` "-": the chain's own datums (no `Hop` dimension).
        let datum_count = |metric: &str, hop: &str| -> f64 {
            datums
                .iter()
                .filter(|d| d.metric == metric)
                .filter(|d| {
                    let of = d.dimensions.iter().find(|(k, _)| k == "Hop").map_or("-", |(_, v)| v.as_str());
                    of == hop
                })
                .map(|d| match &d.value {
                    Value::Single(n) => *n,
                    Value::Distribution(dist) => dist.sample_count(),
                })
                .sum()
        };

        let lines = emf::lines(&period, "Hopwatch", &extra, 60, detail);
        let docs: Vec<serde_json::Value> = lines
            .iter()
            .map(|l| serde_json::from_str(l))
            .collect::<Result<_, _>>()
            .map_err(|e| TestCaseError::fail(format!("an EMF line is not JSON: {e}")))?;
        // (metric, hop) -> what the lines publish, and what they carry as properties only.
        let mut published: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut properties: BTreeMap<(String, String), usize> = BTreeMap::new();
        for doc in &docs {
            let hop = doc["Hop"].as_str().unwrap_or("-").to_string();
            let names: BTreeSet<String> = doc["_aws"]["CloudWatchMetrics"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|d| d["Metrics"].as_array().into_iter().flatten())
                .filter_map(|m| m["Name"].as_str().map(str::to_string))
                .collect();
            for name in ["Latency", "Probes", "ProbeFailures", "HopUp", "BrokenHop", "HealthCheckUp", "UnexpectedSource", "ChainUp"] {
                if doc.get(name).is_none() {
                    continue;
                }
                let n = if name == "Probes" || name == "ProbeFailures" {
                    doc[name].as_f64().unwrap_or(f64::NAN) as usize
                } else {
                    count_of(&doc[name])?
                };
                let to = if names.contains(name) { &mut published } else { &mut properties };
                *to.entry((name.to_string(), hop.clone())).or_default() += n;
            }
            prop_assert!(names.iter().all(|n| doc.get(n.as_str()).is_some()), "a directive names a member the line lacks");
        }
        let get = |m: &BTreeMap<(String, String), usize>, metric: &str, hop: &str| m.get(&(metric.to_string(), hop.to_string())).copied().unwrap_or(0);
        let mut failures = 0u64;
        for (i, (samples, results, tallies)) in hops.iter().enumerate() {
            let hop = format!("hop-{i}");
            let probes: u64 = results.values().sum();
            let failed: u64 = results.iter().filter(|(c, _)| **c != "ok").map(|(_, n)| n).sum();
            failures += failed;
            let troubled = failed > 0 || tallies[0].zeros > 0 || tallies[1].ones > 0 || tallies[2].zeros > 0 || tallies[3].ones > 0;
            let own = detail == CloudWatchDetail::Hop || troubled;
            // What its datums and published EMF metrics count: everything, or nothing.
            let want = |n: u64| if own { n } else { 0 };
            prop_assert_eq!(datum_count("Latency", &hop), want(samples.len() as u64) as f64);
            prop_assert_eq!(get(&published, "Latency", &hop), want(samples.len() as u64) as usize);
            prop_assert_eq!(datum_count("Probes", &hop), want(probes) as f64);
            prop_assert_eq!(get(&published, "Probes", &hop) as u64, want(probes));
            for (metric, t) in ["HopUp", "BrokenHop", "HealthCheckUp", "UnexpectedSource"].iter().zip(tallies) {
                prop_assert_eq!(datum_count(metric, &hop), want(t.total()) as f64, "{}", metric);
                prop_assert_eq!(get(&published, metric, &hop) as u64, want(t.total()), "{}", metric);
                // Published or kept as a property: never lost.
                prop_assert_eq!((get(&published, metric, &hop) + get(&properties, metric, &hop)) as u64, t.total(), "{}", metric);
            }
            prop_assert_eq!(get(&published, "Latency", &hop) + get(&properties, "Latency", &hop), samples.len());
            let ok = results.get("ok").copied().unwrap_or(0);
            prop_assert_eq!((get(&published, "Probes", &hop) + get(&properties, "Probes", &hop)) as u64, if own { probes } else { ok });
        }
        prop_assert_eq!(get(&published, "ChainUp", "-") as u64, chain_up.total());
        prop_assert_eq!(datum_count("ChainUp", "-"), chain_up.total() as f64);
        // The chain's own figures: only at `chain` detail.
        let chain_level = detail == CloudWatchDetail::Chain;
        let outermost = hops[0].0.len() as u64;
        prop_assert_eq!(datum_count("Latency", "-"), if chain_level { outermost as f64 } else { 0.0 });
        prop_assert_eq!(get(&published, "Latency", "-") as u64, if chain_level { outermost } else { 0 });
        prop_assert_eq!(datum_count("ProbeFailures", "-"), if chain_level { failures as f64 } else { 0.0 });
        prop_assert_eq!(get(&published, "ProbeFailures", "-") as u64, if chain_level { failures } else { 0 });
    }
}
