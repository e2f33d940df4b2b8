//! The wire side of the harness's HTTP/1.1 client: a response's status line
//! and headers, and its body (chunked, `Content-Length` or up to EOF), each
//! read with a cap in bytes so that a misbehaving daemon cannot bloat the
//! harness.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;

use crate::client::Outcome;

/// Most bytes of a status line plus headers.
pub const MAX_HEAD: u64 = 64 * 1024;
/// Most bytes of one body, or of one server-sent event.
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Where a request was when it failed or ran out of time.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    Connect,
    Head,
    FirstToken,
    Body,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Head => "response headers",
            Phase::FirstToken => "first token",
            Phase::Body => "rest of the body",
        }
    }
}

/// Why an exchange broke off.
pub enum Fail {
    Io(io::Error, Phase),
    Eof(Phase),
    Malformed(String),
    Outcome(Outcome),
}

pub fn malformed(what: impl Into<String>) -> Fail {
    Fail::Malformed(what.into())
}

pub type Conn = BufReader<TcpStream>;

/// The parts of a response head the harness looks at.
pub struct Head {
    pub status: u16,
    pub keep_alive: bool,
    pub chunked: bool,
    pub length: Option<usize>,
    pub retry_after: Option<Duration>,
    pub event_stream: bool,
}

pub async fn read_line(conn: &mut Conn, budget: &mut u64, phase: Phase) -> Result<String, Fail> {
    let mut line = Vec::new();
    let n = (&mut *conn)
        .take(*budget)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| Fail::Io(e, phase))?;
    if n == 0 {
        return Err(Fail::Eof(phase));
    }
    *budget = budget.saturating_sub(n as u64);
    if line.last() != Some(&b'\n') {
        return Err(malformed(format!("a line longer than {MAX_HEAD} bytes")));
    }
    let line = String::from_utf8(line).map_err(|_| malformed("a line that is not UTF-8"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

pub async fn read_head(conn: &mut Conn, answered: &mut bool) -> Result<Head, Fail> {
    let mut budget = MAX_HEAD;
    let status_line = read_line(conn, &mut budget, Phase::Head).await?;
    *answered = true;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .filter(|_| version.starts_with("HTTP/1."))
        .ok_or_else(|| malformed(format!("status line {status_line:?}")))?;
    let mut head = Head {
        status,
        keep_alive: version == "HTTP/1.1",
        chunked: false,
        length: None,
        retry_after: None,
        event_stream: false,
    };
    loop {
        let line = read_line(conn, &mut budget, Phase::Head).await?;
        if line.is_empty() {
            return Ok(head);
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(malformed(format!("header line {line:?}")));
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "connection" => head.keep_alive &= !value.eq_ignore_ascii_case("close"),
            "transfer-encoding" => head.chunked = value.eq_ignore_ascii_case("chunked"),
            "content-length" => {
                let n = value.parse().map_err(|_| malformed("Content-Length"))?;
                head.length = Some(n);
            }
            "retry-after" => head.retry_after = value.parse().ok().map(Duration::from_secs),
            "content-type" => head.event_stream = value.starts_with("text/event-stream"),
            _ => {}
        }
    }
}

/// A response body being read: chunked, of a known length, or up to EOF.
pub enum Body {
    Chunked { done: bool },
    Length(usize),
    ToEof { done: bool },
}

impl Body {
    pub fn of(head: &Head) -> Body {
        match (head.chunked, head.length) {
            (true, _) => Body::Chunked { done: false },
            (false, Some(n)) => Body::Length(n),
            (false, None) => Body::ToEof { done: false },
        }
    }

    pub fn finished(&self) -> bool {
        matches!(self, Body::Chunked { done: true } | Body::Length(0))
    }

    /// The next piece of the body, `None` at its end.
    pub async fn next(&mut self, conn: &mut Conn) -> Result<Option<Vec<u8>>, Fail> {
        let phase = Phase::Body;
        match self {
            Body::Chunked { done: true } | Body::Length(0) | Body::ToEof { done: true } => Ok(None),
            Body::Chunked { done } => {
                let mut budget = MAX_HEAD;
                let line = read_line(conn, &mut budget, phase).await?;
                let hex = line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(hex, 16)
                    .map_err(|_| malformed(format!("chunk size {line:?}")))?;
                if size == 0 {
                    while !read_line(conn, &mut budget, phase).await?.is_empty() {}
                    *done = true;
                    return Ok(None);
                }
                if size > MAX_BODY {
                    return Err(malformed(format!("a {size}-byte chunk")));
                }
                let mut piece = vec![0; size];
                conn.read_exact(&mut piece)
                    .await
                    .map_err(|e| Fail::Io(e, phase))?;
                if !read_line(conn, &mut budget, phase).await?.is_empty() {
                    return Err(malformed("no CRLF after a chunk"));
                }
                Ok(Some(piece))
            }
            Body::Length(left) => {
                let mut piece = vec![0; (*left).min(64 * 1024)];
                let n = conn
                    .read(&mut piece)
                    .await
                    .map_err(|e| Fail::Io(e, phase))?;
                if n == 0 {
                    return Err(Fail::Eof(phase));
                }
                piece.truncate(n);
                *left -= n;
                Ok(Some(piece))
            }
            Body::ToEof { done } => {
                let mut piece = vec![0; 64 * 1024];
                let n = conn
                    .read(&mut piece)
                    .await
                    .map_err(|e| Fail::Io(e, phase))?;
                piece.truncate(n);
                *done = n == 0;
                Ok((n > 0).then_some(piece))
            }
        }
    }

    pub async fn read_all(&mut self, conn: &mut Conn) -> Result<Vec<u8>, Fail> {
        let mut all = Vec::new();
        while let Some(piece) = self.next(conn).await? {
            all.extend_from_slice(&piece);
            if all.len() > MAX_BODY {
                return Err(malformed(format!("a body over {MAX_BODY} bytes")));
            }
        }
        Ok(all)
    }
}
