//! PROXY protocol headers the prober writes before its request, as an NLB with proxy
//! protocol v2 does for its targets: a target behind such an NLB closes connections that start
//! without one (nginx's `listen … proxy_protocol`). The header names the agent's own source and
//! destination, the truth of the connection. Spec: haproxy.org/download/2.9/doc/proxy-protocol.txt.

use std::net::SocketAddr;

use crate::config::ProxyVersion;

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
const SIGNATURE: [u8; 12] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
];

/// The header for a TCP connection from `src` to `dst`.
pub fn header(version: ProxyVersion, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (src, dst) = (canonical(src), canonical(dst));
    match version {
        ProxyVersion::V1 => {
            let family = match (src, dst) {
                (SocketAddr::V4(_), SocketAddr::V4(_)) => "TCP4",
                (SocketAddr::V6(_), SocketAddr::V6(_)) => "TCP6",
                // Mixed families have no v1 form.
                _ => return b"PROXY UNKNOWN\r\n".to_vec(),
            };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                src.ip(),
                dst.ip(),
                src.port(),
                dst.port()
            )
            .into_bytes()
        }
        ProxyVersion::V2 => {
            let mut out = SIGNATURE.to_vec();
            // Version 2, command PROXY.
            out.push(0x21);
            match (src, dst) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                    out.push(0x11); // AF_INET, STREAM
                    out.extend_from_slice(&12u16.to_be_bytes());
                    out.extend_from_slice(&s.ip().octets());
                    out.extend_from_slice(&d.ip().octets());
                    out.extend_from_slice(&s.port().to_be_bytes());
                    out.extend_from_slice(&d.port().to_be_bytes());
                }
                (SocketAddr::V6(s), SocketAddr::V6(d)) => {
                    out.push(0x21); // AF_INET6, STREAM
                    out.extend_from_slice(&36u16.to_be_bytes());
                    out.extend_from_slice(&s.ip().octets());
                    out.extend_from_slice(&d.ip().octets());
                    out.extend_from_slice(&s.port().to_be_bytes());
                    out.extend_from_slice(&d.port().to_be_bytes());
                }
                _ => {
                    out.push(0x00); // AF_UNSPEC: the receiver ignores the addresses
                    out.extend_from_slice(&0u16.to_be_bytes());
                }
            }
            out
        }
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is, so both ends of one connection
/// are of one family.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_headers_are_what_the_spec_says() {
        let src: SocketAddr = "10.0.9.10:40000".parse().expect("src");
        let dst: SocketAddr = "10.0.4.10:80".parse().expect("dst");
        assert_eq!(
            header(ProxyVersion::V1, src, dst),
            b"PROXY TCP4 10.0.9.10 10.0.4.10 40000 80\r\n"
        );
        let v2 = header(ProxyVersion::V2, src, dst);
        assert_eq!(&v2[..12], &SIGNATURE);
        assert_eq!(v2[12], 0x21);
        assert_eq!(v2[13], 0x11);
        assert_eq!(u16::from_be_bytes([v2[14], v2[15]]), 12);
        assert_eq!(&v2[16..20], &[10, 0, 9, 10]);
        assert_eq!(&v2[24..26], &40000u16.to_be_bytes());
        assert_eq!(v2.len(), 16 + 12);
        let six: SocketAddr = "[fd00::1]:5".parse().expect("v6");
        assert_eq!(header(ProxyVersion::V2, six, six).len(), 16 + 36);
        assert_eq!(header(ProxyVersion::V1, src, six), b"PROXY UNKNOWN\r\n");
    }
}
