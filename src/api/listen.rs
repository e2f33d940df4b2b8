//! Accepting connections without being taken down by them: a budget of
//! concurrent TCP connections per listener (derived from `RLIMIT_NOFILE`),
//! accept errors (EMFILE, ENFILE) that back off instead of spinning, and a
//! clear refusal past the budget. The Unix-socket control plane has its own
//! accept loop and no budget, so it keeps answering while TCP is saturated.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;

/// Descriptors kept back for everything that is not a TCP client: the Unix
/// socket's clients, workers' pipes and sockets, model files, the catalog's
/// scans and inotify, journald.
pub const RESERVED_DESCRIPTORS: u64 = 256;
/// The smallest budget a listener gets, however low the descriptor limit.
const MIN_CONNECTIONS: u64 = 16;
/// Longest pause after failed accepts.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
/// Refusals being written at once; past this a refused connection is just closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;
/// How long writing a refusal may take.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the limit now in force.
pub fn raise_descriptor_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the descriptor limit; keeping {soft}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the descriptor limit; assuming 1024");
            1024
        }
    }
}

/// Connection budgets of the TCP listeners, from the configured limits (0 =
/// derive from the descriptor limit): HTTP gets three quarters of what is
/// left after [`RESERVED_DESCRIPTORS`] when gRPC listens on TCP too, else all of it.
pub fn tcp_budgets(
    descriptor_limit: u64,
    http_configured: usize,
    grpc_configured: usize,
    grpc_tcp: bool,
) -> (usize, usize) {
    let spare = descriptor_limit
        .saturating_sub(RESERVED_DESCRIPTORS)
        .max(MIN_CONNECTIONS);
    let (http, grpc) = if grpc_tcp {
        (spare / 4 * 3, spare / 4)
    } else {
        (spare, 0)
    };
    let pick = |configured: usize, derived: u64| {
        if configured > 0 {
            configured
        } else {
            usize::try_from(derived.max(MIN_CONNECTIONS)).unwrap_or(usize::MAX)
        }
    };
    (pick(http_configured, http), pick(grpc_configured, grpc))
}

/// How many connections one listener may hold open at once.
#[derive(Debug, Clone)]
pub struct ConnectionBudget {
    what: &'static str,
    limit: usize,
    permits: Arc<Semaphore>,
    refusals: Arc<Semaphore>,
}

impl ConnectionBudget {
    /// A budget of `limit` connections for the listener named `what` (for logs).
    pub fn new(what: &'static str, limit: usize) -> Self {
        ConnectionBudget {
            what,
            limit,
            permits: Arc::new(Semaphore::new(limit)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
        }
    }

    /// The limit.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Connections open now.
    pub fn in_use(&self) -> usize {
        self.limit.saturating_sub(self.permits.available_permits())
    }

    /// A place for one more connection, or None when the budget is spent.
    fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Answers a connection past the budget with `refusal` (then closes it),
    /// or just closes it when too many refusals are being written already.
    fn refuse(&self, mut stream: TcpStream, refusal: &'static [u8]) {
        let Ok(slot) = self.refusals.clone().try_acquire_owned() else {
            return;
        };
        tracing::debug!(
            listener = self.what,
            limit = self.limit,
            "connection refused: the connection budget is spent"
        );
        tokio::spawn(async move {
            if !refusal.is_empty() {
                let _ = tokio::time::timeout(REFUSAL_WRITE_TIMEOUT, async {
                    stream.write_all(refusal).await?;
                    stream.shutdown().await
                })
                .await;
            }
            drop(slot);
        });
    }
}

/// A connection that holds its place in a budget until it is closed.
#[derive(Debug)]
pub struct Budgeted {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Budgeted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Budgeted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for Budgeted {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

/// Errors of `accept` that say the process or system is out of something
/// (descriptors, buffers): retrying at once would spin.
fn is_resource_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Accept-error back-off of one accept loop: doubles from 10 ms to
/// [`MAX_ACCEPT_BACKOFF`] while accepts keep failing, and warns once per run of failures.
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    delay: Option<Duration>,
}

impl AcceptBackoff {
    async fn failed(&mut self, what: &str, e: &io::Error) {
        let delay = match self.delay {
            None => {
                tracing::warn!(listener = what, error = %e, "cannot accept connections ({e}); backing off until it works again");
                Duration::from_millis(10)
            }
            Some(d) => d.saturating_mul(2).min(MAX_ACCEPT_BACKOFF),
        };
        self.delay = Some(delay);
        tokio::time::sleep(delay).await;
    }

    fn succeeded(&mut self, what: &str) {
        if self.delay.take().is_some() {
            tracing::info!(listener = what, "accepting connections again");
        }
    }
}

/// The next connection within `budget`; connections past it get `refusal`.
pub async fn accept_budgeted(
    listener: &TcpListener,
    budget: &ConnectionBudget,
    refusal: &'static [u8],
    backoff: &mut AcceptBackoff,
) -> Budgeted {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                backoff.succeeded(budget.what);
                match budget.try_admit() {
                    Some(permit) => {
                        let _ = stream.set_nodelay(true);
                        return Budgeted {
                            stream,
                            _permit: permit,
                        };
                    }
                    None => budget.refuse(stream, refusal),
                }
            }
            Err(e) if is_resource_error(&e) => backoff.failed(budget.what, &e).await,
            // Per-connection errors (the peer reset before we accepted): next one.
            Err(e) => tracing::debug!(listener = budget.what, error = %e, "accept failed"),
        }
    }
}

/// Budgeted TCP connections as a stream, for tonic's `serve_with_incoming`.
/// Past the budget a connection is closed at once: gRPC clients see UNAVAILABLE.
pub fn tcp_incoming(
    listener: TcpListener,
    budget: ConnectionBudget,
) -> ReceiverStream<io::Result<Budgeted>> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            let conn = tokio::select! {
                () = tx.closed() => return,
                conn = accept_budgeted(&listener, &budget, b"", &mut backoff) => conn,
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Unix-socket connections as a stream, with the same accept back-off.
pub fn unix_incoming(listener: UnixListener) -> ReceiverStream<io::Result<UnixStream>> {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let mut backoff = AcceptBackoff::default();
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, _)) => {
                    backoff.succeeded("unix");
                    if tx.send(Ok(stream)).await.is_err() {
                        return;
                    }
                }
                Err(e) if is_resource_error(&e) => backoff.failed("unix", &e).await,
                Err(e) => tracing::debug!(error = %e, "accept on the Unix socket failed"),
            }
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_come_from_the_descriptor_limit_unless_configured() {
        assert_eq!(tcp_budgets(1024, 0, 0, false), (768, 16));
        assert_eq!(tcp_budgets(1024, 0, 0, true), (576, 192));
        assert_eq!(tcp_budgets(1024, 100, 7, true), (100, 7));
        // A tiny limit still leaves a usable minimum.
        assert_eq!(tcp_budgets(64, 0, 0, true), (16, 16));
    }

    #[tokio::test]
    async fn connections_past_the_budget_are_refused_and_places_come_back() {
        let listener = std::sync::Arc::new(TcpListener::bind("127.0.0.1:0").await.unwrap());
        let addr = listener.local_addr().unwrap();
        let budget = ConnectionBudget::new("test", 2);
        let mut backoff = AcceptBackoff::default();
        let _a = TcpStream::connect(addr).await.unwrap();
        let _b = TcpStream::connect(addr).await.unwrap();
        let first = accept_budgeted(&listener, &budget, b"", &mut backoff).await;
        let _second = accept_budgeted(&listener, &budget, b"", &mut backoff).await;
        assert_eq!(budget.in_use(), 2);
        // The budget is spent: the next connection is answered and closed.
        let third = tokio::spawn({
            let (listener, budget) = (listener.clone(), budget.clone());
            async move {
                let mut backoff = AcceptBackoff::default();
                accept_budgeted(&listener, &budget, b"busy", &mut backoff).await
            }
        });
        let mut refused = TcpStream::connect(addr).await.unwrap();
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut refused, &mut answer)
            .await
            .unwrap();
        assert_eq!(answer, b"busy");
        // A closed connection gives its place back.
        drop(first);
        let _c = TcpStream::connect(addr).await.unwrap();
        let _third = third.await.unwrap();
        assert_eq!(budget.in_use(), 2);
    }
}
