//! Bounded connections for airlift's gRPC servers (the coordinator, the learners' Flight
//! ports): a peer cannot exhaust one by opening connections and saying nothing.
//!
//! * **A cap:** at most [`cap`] connections at once (half the process's open-file limit, at
//!   most 1,024); one more is closed at once, with a warning at most every 10 s.
//! * **A hello deadline:** a connection that sends no byte within [`HELLO_TIMEOUT`] of being
//!   accepted is closed (an HTTP/2 client sends its preface at once).
//! * Established connections are pinged by HTTP/2 keepalive ([`server`]), so dead peers go too.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How long an accepted connection may stay silent before its first byte.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The most connections served at once: half the soft open-file limit (the rest is for the run's
/// files), between 64 and 16,384. A coordinator holds one connection per worker, so 1,000
/// workers need a soft limit of about 2,100; [`raise_nofile`] lifts it to the hard limit first.
pub fn cap() -> usize {
    (soft_nofile() / 2).clamp(64, 16_384)
}

fn soft_nofile() -> usize {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } == 0 {
        r.rlim_cur as usize
    } else {
        1024
    }
}

/// Lifts this process's soft open-file limit to its hard limit (at most 65,536), as servers
/// that hold a connection per client do; returns the soft limit in force afterwards. A hard
/// limit set from outside (`prlimit`, `ulimit -Hn`, Slurm's) is respected.
pub fn raise_nofile() -> usize {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit / setrlimit read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            let want = r.rlim_max.min(65_536);
            if r.rlim_cur < want {
                let lifted = libc::rlimit {
                    rlim_cur: want,
                    rlim_max: r.rlim_max,
                };
                let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lifted);
            }
        }
    }
    soft_nofile()
}

/// One accepted connection, counted while it lives.
pub struct Conn {
    inner: TcpStream,
    live: Arc<AtomicUsize>,
    /// Until the first byte arrives: when the connection is closed for silence.
    hello: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let me = &mut *self;
        match Pin::new(&mut me.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    me.hello = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let silent_too_long = me.hello.as_mut().is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if silent_too_long {
                    Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no request within the hello deadline")))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, b)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

use std::future::Future;

/// A tonic server builder with HTTP/2 keepalive: every 30 s a ping, 20 s to answer.
pub fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
}

/// How often a client (a worker, `coordinator status`) pings its server over HTTP/2, busy or idle.
pub const CLIENT_PING_EVERY: Duration = Duration::from_secs(5);
/// How long a client waits for a ping's answer before it drops the connection: a server whose
/// node vanished or whose link is down is given up after at most `CLIENT_PING_EVERY` plus this,
/// and the client's calls and streams on it fail (a worker then exits) instead of waiting for
/// TCP's retransmissions (15 minutes).
pub const CLIENT_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one connection attempt may take (an unreachable address is not answered at all).
pub const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The connections of `listener` as a stream for `serve_with_incoming`, at most `cap` at once.
pub fn incoming(listener: TcpListener, cap: usize) -> impl futures::Stream<Item = std::io::Result<Conn>> {
    let live = Arc::new(AtomicUsize::new(0));
    let last_warn: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    futures::stream::unfold((listener, live, last_warn), move |(listener, live, last_warn)| async move {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(x) => x,
                // Out of file descriptors and the like: wait a little rather than spin or stop.
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if live.load(Ordering::SeqCst) >= cap {
                let mut w = last_warn.lock().unwrap();
                if w.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(%addr, cap, "connection refused: this server already serves its maximum of connections");
                    *w = Some(Instant::now());
                }
                drop(stream);
                continue;
            }
            live.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_nodelay(true);
            let conn = Conn {
                inner: stream,
                live: live.clone(),
                hello: Some(Box::pin(tokio::time::sleep(HELLO_TIMEOUT))),
            };
            return Some((Ok(conn), (listener, live, last_warn)));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use std::io::Read;

    /// Over the cap, a connection is closed at once; under it, one that says nothing is closed
    /// by the hello deadline (the server's read fails), and one that speaks is served.
    #[tokio::test]
    async fn the_cap_and_the_hello_deadline_close_silent_connections() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conns = Box::pin(incoming(listener, 2));
        let clients: Vec<std::net::TcpStream> = (0..3).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
        let mut a = conns.next().await.unwrap().unwrap();
        let mut b = conns.next().await.unwrap().unwrap();
        // The third is over the cap: the server closes it while waiting for a fourth.
        let fourth = tokio::spawn(async move { (conns.next().await, conns) });
        let mut third = clients[2].try_clone().unwrap();
        third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::task::spawn_blocking(move || third.read(&mut buf)).await.unwrap();
        assert!(matches!(n, Ok(0)) || n.is_err(), "over the cap: closed, got {n:?}");
        fourth.abort();
        // `b`'s client speaks; `a`'s stays silent past the deadline.
        use std::io::Write;
        (&clients[1]).write_all(b"x").unwrap();
        use tokio::io::AsyncReadExt;
        let mut one = [0u8; 1];
        assert_eq!(b.read(&mut one).await.unwrap(), 1);
        let t = Instant::now();
        let e = a.read(&mut one).await.unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
        assert!(t.elapsed() >= HELLO_TIMEOUT - Duration::from_millis(500), "{:?}", t.elapsed());
    }
}
