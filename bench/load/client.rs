//! A raw HTTP/1.1 client for the load harness: one keep-alive connection per
//! simulated user, a hand-written request, and just enough response parsing
//! (status line, headers, `Content-Length` or chunked bodies, server-sent
//! events) to tell a served answer from every way one can go wrong. Every
//! read is bounded in bytes and every request in time, so a misbehaving
//! daemon shows up as a counted error, never as a hung or bloated harness.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Most bytes of a status line plus headers.
const MAX_HEAD: u64 = 64 * 1024;
/// Most bytes of one body, or of one server-sent event.
const MAX_BODY: usize = 16 * 1024 * 1024;

/// How a request is made and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `stream: true`, read to `data: [DONE]`.
    Stream,
    /// `stream: false`, the whole JSON answer.
    Whole,
    /// `stream: true`, hang up right after the first data event.
    Disconnect,
}

/// What one request came to.
#[derive(Debug)]
pub enum Outcome {
    /// Served as asked (for `Disconnect`: up to the first event, then we left).
    Served { mode: Mode, ttft: Duration },
    /// An explicit refusal: 429 or 503 with an error body.
    Refused {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    /// Anything else: `kind` is what gets counted, `detail` one example.
    Failed { kind: String, detail: String },
}

/// Where a request was when it failed or ran out of time.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Connect,
    Head,
    FirstToken,
    Body,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Connect => "connect",
            Phase::Head => "response headers",
            Phase::FirstToken => "first token",
            Phase::Body => "rest of the body",
        }
    }
}

/// Why an exchange broke off.
enum Fail {
    Io(io::Error, Phase),
    Eof(Phase),
    Malformed(String),
    Outcome(Outcome),
}

fn malformed(what: impl Into<String>) -> Fail {
    Fail::Malformed(what.into())
}

fn failed(kind: impl Into<String>, detail: impl Into<String>) -> Outcome {
    Outcome::Failed {
        kind: kind.into(),
        detail: detail.into(),
    }
}

impl Fail {
    fn into_outcome(self) -> Outcome {
        match self {
            Fail::Io(e, phase) => {
                let kind = match (e.raw_os_error(), e.kind(), phase) {
                    (Some(libc::EMFILE | libc::ENFILE), _, _) => {
                        "harness out of descriptors (EMFILE)".to_owned()
                    }
                    (_, io::ErrorKind::ConnectionRefused, _) => "connection refused".to_owned(),
                    (_, io::ErrorKind::ConnectionReset, _) => "connection reset".to_owned(),
                    (_, io::ErrorKind::BrokenPipe, _) => "broken pipe".to_owned(),
                    (_, kind, phase) => format!("io error ({kind:?}) at {}", phase.name()),
                };
                failed(kind, e.to_string())
            }
            Fail::Eof(phase) => failed(
                format!("closed early ({})", phase.name()),
                "the daemon closed the connection",
            ),
            Fail::Malformed(what) => failed("malformed response", what),
            Fail::Outcome(o) => o,
        }
    }
}

type Conn = BufReader<TcpStream>;

/// One simulated user: requests one after another on a kept-alive connection.
pub struct Client {
    addr: SocketAddr,
    conn: Option<Conn>,
    /// Requests retried because a kept-alive connection had been closed by the daemon.
    pub reconnects: u64,
}

impl Client {
    /// A client of the daemon's HTTP API at `addr`; connects on first use.
    pub fn new(addr: SocketAddr) -> Self {
        Client {
            addr,
            conn: None,
            reconnects: 0,
        }
    }

    /// POSTs `body` (JSON) to `path`, reading the answer as `mode` says, within `limit`.
    pub async fn post(&mut self, path: &str, body: &str, mode: Mode, limit: Duration) -> Outcome {
        let started = Instant::now();
        let deadline = started + limit;
        loop {
            let reused = self.conn.is_some();
            let mut phase = Phase::Connect;
            let mut answered = false;
            let left = deadline.saturating_duration_since(Instant::now());
            let exchange = self.exchange(path, body, mode, started, &mut phase, &mut answered);
            match tokio::time::timeout(left, exchange).await {
                Ok(Ok(outcome)) => return outcome,
                // A kept-alive connection the daemon closed before we wrote on
                // it (its idle timeout): HTTP clients retry those on a fresh one.
                Ok(Err(Fail::Io(..) | Fail::Eof(_))) if reused && !answered => {
                    self.conn = None;
                    self.reconnects += 1;
                }
                Ok(Err(fail)) => {
                    self.conn = None;
                    return fail.into_outcome();
                }
                Err(_) => {
                    self.conn = None;
                    return failed(
                        format!("timeout ({})", phase.name()),
                        format!("no answer within {limit:?}"),
                    );
                }
            }
        }
    }

    async fn exchange(
        &mut self,
        path: &str,
        body: &str,
        mode: Mode,
        started: Instant,
        phase: &mut Phase,
        answered: &mut bool,
    ) -> Result<Outcome, Fail> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => {
                let stream = TcpStream::connect(self.addr)
                    .await
                    .map_err(|e| Fail::Io(e, Phase::Connect))?;
                let _ = stream.set_nodelay(true);
                BufReader::new(stream)
            }
        };
        *phase = Phase::Head;
        let accept = if mode == Mode::Whole {
            "application/json"
        } else {
            "text/event-stream"
        };
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nAccept: {accept}\r\nContent-Length: {}\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        conn.get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(|e| Fail::Io(e, Phase::Head))?;
        let head = read_head(&mut conn, answered).await?;
        let mut body = Body::of(&head);
        if head.status != 200 {
            let text = body.read_all(&mut conn).await?;
            let message = error_message(&text);
            self.keep(conn, &head, &body);
            return Ok(match head.status {
                429 | 503 => Outcome::Refused {
                    status: head.status,
                    retry_after: head.retry_after,
                    message,
                },
                status => failed(format!("http {status}"), message),
            });
        }
        let outcome = match mode {
            Mode::Whole => {
                *phase = Phase::Body;
                let text = body.read_all(&mut conn).await?;
                check_whole(&text)?;
                Outcome::Served {
                    mode,
                    ttft: started.elapsed(),
                }
            }
            Mode::Stream | Mode::Disconnect => {
                if !head.event_stream {
                    return Err(malformed("a streamed answer that is not text/event-stream"));
                }
                *phase = Phase::FirstToken;
                let ttft = read_events(&mut conn, &mut body, mode, started, phase).await?;
                // For `Disconnect` the body is unfinished, so `keep` drops the
                // connection: the daemon must notice and cancel the generation.
                Outcome::Served { mode, ttft }
            }
        };
        self.keep(conn, &head, &body);
        Ok(outcome)
    }

    /// Keeps the connection for the next request when HTTP allows it.
    fn keep(&mut self, conn: Conn, head: &Head, body: &Body) {
        if head.keep_alive && body.finished() {
            self.conn = Some(conn);
        }
    }
}

/// The parts of a response head the harness looks at.
struct Head {
    status: u16,
    keep_alive: bool,
    chunked: bool,
    length: Option<usize>,
    retry_after: Option<Duration>,
    event_stream: bool,
}

async fn read_line(conn: &mut Conn, budget: &mut u64, phase: Phase) -> Result<String, Fail> {
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

async fn read_head(conn: &mut Conn, answered: &mut bool) -> Result<Head, Fail> {
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
enum Body {
    Chunked { done: bool },
    Length(usize),
    ToEof { done: bool },
}

impl Body {
    fn of(head: &Head) -> Body {
        match (head.chunked, head.length) {
            (true, _) => Body::Chunked { done: false },
            (false, Some(n)) => Body::Length(n),
            (false, None) => Body::ToEof { done: false },
        }
    }

    fn finished(&self) -> bool {
        matches!(self, Body::Chunked { done: true } | Body::Length(0))
    }

    /// The next piece of the body, `None` at its end.
    async fn next(&mut self, conn: &mut Conn) -> Result<Option<Vec<u8>>, Fail> {
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

    async fn read_all(&mut self, conn: &mut Conn) -> Result<Vec<u8>, Fail> {
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

/// `error.message` of an OpenAI-shaped error body, else the start of the body.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}

fn check_whole(body: &[u8]) -> Result<(), Fail> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| malformed(format!("JSON body: {e}")))?;
    if value["choices"][0]["text"].is_string() {
        Ok(())
    } else {
        let shown: String = String::from_utf8_lossy(body).chars().take(200).collect();
        Err(malformed(format!("no choices[0].text in {shown}")))
    }
}

/// Reads server-sent events to `[DONE]` (or, for `Disconnect`, to the first
/// data event); returns the time to the first data event.
async fn read_events(
    conn: &mut Conn,
    body: &mut Body,
    mode: Mode,
    started: Instant,
    phase: &mut Phase,
) -> Result<Duration, Fail> {
    let mut pending: Vec<u8> = Vec::new();
    let mut data: Option<String> = None;
    let mut ttft = None;
    let mut done = false;
    while let Some(piece) = body.next(conn).await? {
        pending.extend_from_slice(&piece);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some(value) = line.strip_prefix("data:") {
                let value = value.strip_prefix(' ').unwrap_or(value);
                let text = data.get_or_insert_with(String::new);
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(value);
            } else if line.is_empty() {
                let Some(event) = data.take() else { continue };
                if done {
                    return Err(malformed("an event after [DONE]"));
                }
                let first = *ttft.get_or_insert_with(|| started.elapsed());
                *phase = Phase::Body;
                if event == "[DONE]" {
                    done = true;
                    continue;
                }
                check_event(&event)?;
                if mode == Mode::Disconnect {
                    return Ok(first);
                }
            }
            // Comments (`:` heartbeats) and other fields are skipped.
        }
        if pending.len() > MAX_BODY {
            return Err(malformed(format!("an event over {MAX_BODY} bytes")));
        }
    }
    match (done, ttft) {
        (true, Some(first)) => Ok(first),
        _ => Err(Fail::Outcome(failed(
            "stream ended without [DONE]",
            "the body ended before data: [DONE]",
        ))),
    }
}

fn check_event(event: &str) -> Result<(), Fail> {
    let value: Value =
        serde_json::from_str(event).map_err(|e| malformed(format!("event JSON: {e}")))?;
    if let Some(message) = value["error"]["message"].as_str() {
        return Err(Fail::Outcome(failed("error event mid-stream", message)));
    }
    if value["choices"].is_array() {
        Ok(())
    } else {
        Err(malformed(format!("event without choices: {event:.200}")))
    }
}

/// GETs `path` on a fresh connection within `limit`: the status and body, or why not.
pub async fn get(addr: SocketAddr, path: &str, limit: Duration) -> Result<(u16, Vec<u8>), String> {
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| Fail::Io(e, Phase::Connect))?;
        let mut conn = BufReader::new(stream);
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        conn.get_mut()
            .write_all(request.as_bytes())
            .await
            .map_err(|e| Fail::Io(e, Phase::Head))?;
        let head = read_head(&mut conn, &mut false).await?;
        let body = Body::of(&head).read_all(&mut conn).await?;
        Ok::<_, Fail>((head.status, body))
    };
    match tokio::time::timeout(limit, exchange).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(fail)) => Err(match fail.into_outcome() {
            Outcome::Failed { kind, detail } => format!("{kind}: {detail}"),
            other => format!("{other:?}"),
        }),
        Err(_) => Err(format!("no answer within {limit:?}")),
    }
}
