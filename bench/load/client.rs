//! A raw HTTP/1.1 client for the load harness: one keep-alive connection per
//! simulated user, a hand-written request, and just enough reading of the
//! answer (`http` parses the wire; here: JSON bodies and server-sent events)
//! to tell a served answer from every way one can go wrong. Every read is
//! bounded in bytes and every request in time, so a misbehaving daemon shows
//! up as a counted error, never as a hung or bloated harness.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::http::{Body, Conn, Fail, Head, MAX_BODY, Phase, malformed, read_head};

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
