//! PROXY protocol v1 (text) and v2 (binary) headers, as an NLB with proxy protocol v2 enabled
//! sends them: the caller's address, and over PrivateLink the VPC endpoint id in the AWS TLV
//! (type `0xEA`, subtype `0x01`).
//!
//! The parser takes untrusted bytes: it never panics, never reads past what it was given, and
//! says `Incomplete` when it needs more so the caller can read again (bounded by
//! [`MAX_HEADER`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 line, CRLF included (spec §2.1).
const V1_MAX: usize = 107;
/// Longest v2 header: 16 fixed bytes plus a 16-bit length.
pub const MAX_HEADER: usize = 16 + u16::MAX as usize;

const TLV_CRC32C: u8 = 0x03;
const TLV_NOOP: u8 = 0x04;
const TLV_AWS: u8 = 0xEA;
const AWS_VPCE_ID: u8 = 0x01;

/// `PROXY` (a relayed connection) or `LOCAL` (the proxy's own, e.g. a health check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Local,
    Proxy,
}

/// One parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 1 or 2.
    pub version: u8,
    pub command: Command,
    /// Original source (the caller); `None` for LOCAL, UNKNOWN, UNSPEC or UNIX.
    pub src: Option<SocketAddr>,
    /// Original destination.
    pub dst: Option<SocketAddr>,
    /// AWS VPC endpoint id (`vpce-…`) from TLV 0xEA/0x01.
    pub vpce_id: Option<String>,
    /// `Some(true)` when a CRC32C TLV was present and matched, `Some(false)` when it did not.
    pub crc_ok: Option<bool>,
}

/// Why bytes are not (yet) a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A valid prefix: read more.
    Incomplete,
    /// Not a PROXY header, or a broken one.
    Invalid(String),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Incomplete => f.write_str("incomplete PROXY header"),
            ParseError::Invalid(why) => write!(f, "invalid PROXY header: {why}"),
        }
    }
}

impl std::error::Error for ParseError {}

fn invalid<T>(why: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError::Invalid(why.into()))
}

/// Whether `buf` begins (or could begin, if short) with a PROXY header of either version.
pub fn looks_like_header(buf: &[u8]) -> bool {
    let prefix = |sig: &[u8]| {
        let n = buf.len().min(sig.len());
        buf[..n] == sig[..n]
    };
    !buf.is_empty() && (prefix(&V2_SIGNATURE) || prefix(b"PROXY "))
}

/// Parses one header at the start of `buf`; returns it and the number of bytes it used.
pub fn parse(buf: &[u8]) -> Result<(Header, usize), ParseError> {
    if buf.is_empty() {
        return Err(ParseError::Incomplete);
    }
    if buf[0] == V2_SIGNATURE[0] {
        parse_v2(buf)
    } else if buf[0] == b'P' {
        parse_v1(buf)
    } else {
        invalid("does not start with a PROXY signature")
    }
}

fn parse_v1(buf: &[u8]) -> Result<(Header, usize), ParseError> {
    let sig = b"PROXY ";
    let n = buf.len().min(sig.len());
    if buf[..n] != sig[..n] {
        return invalid("does not start with \"PROXY \"");
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            invalid(format!("v1 line longer than {V1_MAX} bytes"))
        } else {
            Err(ParseError::Incomplete)
        };
    };
    let line = std::str::from_utf8(&buf[..end])
        .map_err(|_| ParseError::Invalid("v1 line is not ASCII".into()))?;
    let fields: Vec<&str> = line.split(' ').collect();
    let header = |src, dst| Header {
        version: 1,
        command: Command::Proxy,
        src,
        dst,
        vpce_id: None,
        crc_ok: None,
    };
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok((header(None, None), end + 2)),
        ["PROXY", proto @ ("TCP4" | "TCP6"), src, dst, sport, dport] => {
            let ip = |text: &str| -> Result<IpAddr, ParseError> {
                let ip: IpAddr = text
                    .parse()
                    .map_err(|_| ParseError::Invalid(format!("v1 address {text:?}")))?;
                match (*proto, ip) {
                    ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => Ok(ip),
                    _ => invalid(format!("v1 address {text:?} is not {proto}")),
                }
            };
            let port = |text: &str| -> Result<u16, ParseError> {
                if text.is_empty()
                    || text.len() > 5
                    || !text.bytes().all(|b| b.is_ascii_digit())
                    || (text.len() > 1 && text.starts_with('0'))
                {
                    return invalid(format!("v1 port {text:?}"));
                }
                text.parse()
                    .map_err(|_| ParseError::Invalid(format!("v1 port {text:?}")))
            };
            let src = SocketAddr::new(ip(src)?, port(sport)?);
            let dst = SocketAddr::new(ip(dst)?, port(dport)?);
            Ok((header(Some(src), Some(dst)), end + 2))
        }
        _ => invalid(format!(
            "v1 line {line:?} is not \"PROXY TCP4|TCP6 src dst sport dport\""
        )),
    }
}

fn parse_v2(buf: &[u8]) -> Result<(Header, usize), ParseError> {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return invalid("bad v2 signature");
    }
    if buf.len() < 16 {
        return Err(ParseError::Incomplete);
    }
    let version = buf[12] >> 4;
    if version != 2 {
        return invalid(format!("v2 header with version {version}"));
    }
    let command = match buf[12] & 0x0F {
        0 => Command::Local,
        1 => Command::Proxy,
        other => return invalid(format!("v2 command {other}")),
    };
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0F;
    if family > 3 || transport > 2 {
        return invalid(format!("v2 family/transport byte {:#04x}", buf[13]));
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = 16 + len;
    if buf.len() < total {
        return Err(ParseError::Incomplete);
    }
    let body = &buf[16..total];
    let addr_len = match family {
        1 => 12,
        2 => 36,
        3 => 216,
        _ => 0,
    };
    if body.len() < addr_len {
        return invalid(format!(
            "v2 address block needs {addr_len} bytes, header holds {}",
            body.len()
        ));
    }
    let (mut src, mut dst) = (None, None);
    // LOCAL carries no meaningful addresses (the spec says to ignore them).
    if command == Command::Proxy {
        match family {
            1 => {
                let a = &body[..12];
                let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                src = Some(SocketAddr::new(ip(0), port(8)));
                dst = Some(SocketAddr::new(ip(4), port(10)));
            }
            2 => {
                let a = &body[..36];
                let ip = |o: usize| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&a[o..o + 16]);
                    IpAddr::V6(Ipv6Addr::from(b))
                };
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                src = Some(SocketAddr::new(ip(0), port(32)));
                dst = Some(SocketAddr::new(ip(16), port(34)));
            }
            _ => {}
        }
    }
    let mut header = Header {
        version: 2,
        command,
        src,
        dst,
        vpce_id: None,
        crc_ok: None,
    };
    let mut tlvs = &body[addr_len..];
    let mut offset = 16 + addr_len;
    while !tlvs.is_empty() {
        if tlvs.len() < 3 {
            return invalid("truncated v2 TLV");
        }
        let kind = tlvs[0];
        let vlen = usize::from(u16::from_be_bytes([tlvs[1], tlvs[2]]));
        if tlvs.len() < 3 + vlen {
            return invalid(format!(
                "v2 TLV {kind:#04x} claims {vlen} bytes, {} left",
                tlvs.len() - 3
            ));
        }
        let value = &tlvs[3..3 + vlen];
        match kind {
            TLV_AWS if value.first() == Some(&AWS_VPCE_ID) => {
                let id = std::str::from_utf8(&value[1..])
                    .map_err(|_| ParseError::Invalid("AWS VPC endpoint id is not ASCII".into()))?;
                header.vpce_id = Some(id.to_string());
            }
            TLV_CRC32C => {
                if vlen != 4 {
                    return invalid(format!("CRC32C TLV of {vlen} bytes"));
                }
                let expected = u32::from_be_bytes([value[0], value[1], value[2], value[3]]);
                // The checksum covers the whole header with the checksum field zeroed.
                let mut copy = buf[..total].to_vec();
                let at = offset + 3;
                copy[at..at + 4].fill(0);
                header.crc_ok = Some(crc32c(&copy) == expected);
            }
            TLV_NOOP => {}
            _ => {}
        }
        offset += 3 + vlen;
        tlvs = &tlvs[3 + vlen..];
    }
    Ok((header, total))
}

/// CRC-32C (Castagnoli), reflected, as the PROXY protocol's CRC32C TLV uses.
pub fn crc32c(data: &[u8]) -> u32 {
    const POLY: u32 = 0x82F6_3B78;
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Parses every header stacked at the start of `buf` (a proxy behind a proxy adds its own in
/// front). Returns them nearest-proxy first and the bytes they used; `Incomplete` if the last
/// one is cut short.
pub fn parse_stacked(buf: &[u8]) -> Result<(Vec<Header>, usize), ParseError> {
    let mut headers = Vec::new();
    let mut used = 0;
    loop {
        let rest = &buf[used..];
        if rest.is_empty() {
            if headers.is_empty() {
                return Err(ParseError::Incomplete);
            }
            // Could more headers follow? Only the caller knows whether the peer has sent all.
            return Ok((headers, used));
        }
        if !looks_like_header(rest) {
            if headers.is_empty() {
                return invalid("does not start with a PROXY signature");
            }
            return Ok((headers, used));
        }
        match parse(rest) {
            Ok((header, n)) => {
                headers.push(header);
                used += n;
            }
            Err(ParseError::Incomplete) => return Err(ParseError::Incomplete),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addr: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&((addr.len() + tlvs.len()) as u16).to_be_bytes());
        out.extend_from_slice(addr);
        out.extend_from_slice(tlvs);
        out
    }

    /// An AWS NLB-style header: TCP over IPv4, CRC32C, the VPC endpoint id, and NOOP padding.
    fn aws_header() -> Vec<u8> {
        let addr = [10, 0, 1, 25, 10, 0, 2, 9, 0xC3, 0x50, 0x00, 0x50]; // 10.0.1.25:50000 -> 10.0.2.9:80
        let mut tlvs = vec![TLV_CRC32C, 0, 4, 0, 0, 0, 0];
        let vpce = b"vpce-0123456789abcdef0";
        tlvs.push(TLV_AWS);
        tlvs.extend_from_slice(&((vpce.len() + 1) as u16).to_be_bytes());
        tlvs.push(AWS_VPCE_ID);
        tlvs.extend_from_slice(vpce);
        tlvs.extend_from_slice(&[TLV_NOOP, 0, 3, 0, 0, 0]);
        let mut h = v2(1, 0x11, &addr, &tlvs);
        let crc = crc32c(&h);
        let at = 16 + 12 + 3;
        h[at..at + 4].copy_from_slice(&crc.to_be_bytes());
        h
    }

    #[test]
    fn crc32c_known_answer() {
        // RFC 3720 B.4 test vector: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn v1_tcp4_tcp6_unknown() {
        let (h, n) = parse(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /").expect("v1");
        assert_eq!(n, 47, "the line and its CRLF, not the request after it");
        assert_eq!(h.src, Some("192.168.0.1:56324".parse().expect("addr")));
        assert_eq!(h.dst, Some("192.168.0.11:443".parse().expect("addr")));
        let (h, _) = parse(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 80\r\n").expect("v1 tcp6");
        assert_eq!(h.src, Some("[2001:db8::1]:4000".parse().expect("addr")));
        let (h, n) = parse(b"PROXY UNKNOWN\r\n").expect("unknown");
        assert_eq!((h.src, n), (None, 15));
    }

    #[test]
    fn v1_malformed_and_truncated() {
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Err(ParseError::Incomplete));
        assert_eq!(parse(b"PRO"), Err(ParseError::Incomplete));
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n"[..],
            b"PROXY TCP4 ::1 5.6.7.8 80 80\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 80\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 080 80\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(
                matches!(parse(bad), Err(ParseError::Invalid(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(parse(&long), Err(ParseError::Invalid(_))));
    }

    #[test]
    fn v2_aws_header_with_crc_vpce_and_noop() {
        let mut bytes = aws_header();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let (h, n) = parse(&bytes).expect("aws header");
        assert_eq!(n, bytes.len() - 16);
        assert_eq!(h.command, Command::Proxy);
        assert_eq!(h.src, Some("10.0.1.25:50000".parse().expect("addr")));
        assert_eq!(h.dst, Some("10.0.2.9:80".parse().expect("addr")));
        assert_eq!(h.vpce_id.as_deref(), Some("vpce-0123456789abcdef0"));
        assert_eq!(h.crc_ok, Some(true));
        // A flipped address byte breaks the checksum but not the parse.
        let mut tampered = aws_header();
        tampered[16] ^= 1;
        let (h, _) = parse(&tampered).expect("parses");
        assert_eq!(h.crc_ok, Some(false));
    }

    #[test]
    fn v2_local_ipv6_and_unspec() {
        let (h, n) = parse(&v2(0, 0x00, &[], &[])).expect("local");
        assert_eq!((h.command, h.src, n), (Command::Local, None, 16));
        // LOCAL with an address block (as NLB health checks send): addresses are ignored.
        let (h, _) = parse(&v2(0, 0x11, &[1; 12], &[])).expect("local inet");
        assert_eq!((h.command, h.src), (Command::Local, None));
        let mut addr = vec![0u8; 36];
        addr[15] = 1; // ::1
        addr[31] = 2; // ::2
        addr[32..34].copy_from_slice(&443u16.to_be_bytes());
        addr[34..36].copy_from_slice(&8443u16.to_be_bytes());
        let (h, _) = parse(&v2(1, 0x21, &addr, &[])).expect("inet6");
        assert_eq!(h.src, Some("[::1]:443".parse().expect("addr")));
        assert_eq!(h.dst, Some("[::2]:8443".parse().expect("addr")));
    }

    #[test]
    fn v2_truncated_and_malformed() {
        let full = aws_header();
        for cut in 0..full.len() {
            assert_eq!(
                parse(&full[..cut]),
                Err(ParseError::Incomplete),
                "cut at {cut}"
            );
        }
        let mut bad_version = full.clone();
        bad_version[12] = 0x11;
        assert!(matches!(parse(&bad_version), Err(ParseError::Invalid(_))));
        let mut bad_command = full.clone();
        bad_command[12] = 0x2F;
        assert!(matches!(parse(&bad_command), Err(ParseError::Invalid(_))));
        // Length too short for an INET address block.
        assert!(matches!(
            parse(&v2(1, 0x11, &[0; 4], &[])),
            Err(ParseError::Invalid(_))
        ));
        // A TLV running past the header's end.
        assert!(matches!(
            parse(&v2(1, 0x11, &[0; 12], &[TLV_NOOP, 0, 9, 0])),
            Err(ParseError::Invalid(_))
        ));
        assert!(matches!(
            parse(&v2(1, 0x11, &[0; 12], &[TLV_NOOP, 0])),
            Err(ParseError::Invalid(_))
        ));
    }

    #[test]
    fn stacked_headers_nearest_first() {
        let mut bytes = b"PROXY TCP4 10.0.5.5 10.0.2.9 40000 80\r\n".to_vec();
        bytes.extend_from_slice(&aws_header());
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        let (headers, used) = parse_stacked(&bytes).expect("stacked");
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0].version, 1);
        assert_eq!(
            headers[1].vpce_id.as_deref(),
            Some("vpce-0123456789abcdef0")
        );
        assert_eq!(&bytes[used..], b"GET / HTTP/1.1\r\n\r\n");
        assert!(matches!(
            parse_stacked(b"GET / HTTP/1.1\r\n"),
            Err(ParseError::Invalid(_))
        ));
    }

    /// Mutated and random inputs: never a panic, and a success never claims more bytes than given.
    #[test]
    fn fuzzed_inputs_never_panic() {
        let seeds = [
            aws_header(),
            v2(0, 0x00, &[], &[]),
            b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n".to_vec(),
        ];
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for round in 0..200_000 {
            let mut input = seeds[round % seeds.len()].clone();
            let edits = 1 + next() % 4;
            for _ in 0..edits {
                let r = next();
                match r % 4 {
                    0 if !input.is_empty() => {
                        let i = (r >> 8) as usize % input.len();
                        input[i] = (r >> 32) as u8;
                    }
                    1 => input.truncate((r >> 8) as usize % (input.len() + 1)),
                    2 => input.push((r >> 8) as u8),
                    // Lengths are where parsers break: poke the v2 length field.
                    _ if input.len() > 15 => {
                        input[14] = (r >> 8) as u8;
                        input[15] = (r >> 16) as u8;
                    }
                    _ => {}
                }
            }
            if let Ok((_, n)) = parse(&input) {
                assert!(n <= input.len());
            }
            if let Ok((_, n)) = parse_stacked(&input) {
                assert!(n <= input.len());
            }
        }
    }
}
