//! The floor: the least a fresh-connection HTTP probe can cost. One blocking TCP connect, one
//! HTTP/1.1 GET, a read to the server's close, in a tight loop: no scheduling, no timing, no
//! parsing beyond the status line. What hopwatch spends beyond this is its own overhead.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The floor's request: `GET path` with `Connection: close`.
pub fn request(addr: SocketAddr, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
}

/// One floor probe: connect, write `request`, read into `buf` until the server closes; fails
/// unless the answer is a 200.
pub fn probe(addr: SocketAddr, request: &str, buf: &mut [u8]) -> io::Result<()> {
    let mut stream = TcpStream::connect(addr)?;
    stream.write_all(request.as_bytes())?;
    let mut len = 0;
    loop {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if len == buf.len() {
            len = 0;
        }
    }
    if !buf.starts_with(b"HTTP/1.1 200") {
        return Err(io::Error::other("floor probe: not a 200"));
    }
    Ok(())
}

/// Runs in the child process `hopwatch-bench floor ADDR WARMUP_S SECONDS`: loops for the
/// warm-up, prints `start`, loops for `seconds`, prints `done COUNT`, then waits for the parent
/// to close stdin so the parent can read this process's CPU time before it exits.
pub fn child(addr: SocketAddr, warmup: Duration, seconds: Duration) -> io::Result<()> {
    let request = request(addr, "/floor");
    let mut buf = vec![0u8; 16 * 1024];
    let mut probe = || probe(addr, &request, &mut buf);
    let until = Instant::now() + warmup;
    while Instant::now() < until {
        probe()?;
    }
    let mut out = io::stdout().lock();
    writeln!(out, "start")?;
    out.flush()?;
    let until = Instant::now() + seconds;
    let mut count = 0u64;
    while Instant::now() < until {
        probe()?;
        count += 1;
    }
    writeln!(out, "done {count}")?;
    out.flush()?;
    let mut line = String::new();
    io::stdin().lock().read_line(&mut line)?;
    Ok(())
}
