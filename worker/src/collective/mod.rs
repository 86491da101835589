//! Collectives between learner ranks behind one trait: all-reduce, broadcast, all-gather and
//! reduce-scatter on flat f32 buffers.
//!
//! [`TcpRing`] is the CPU backend: each rank keeps one TCP connection to the next rank and one
//! from the previous, and runs the ring algorithms (reduce-scatter then all-gather for
//! all-reduce), sending and receiving concurrently so large segments never deadlock. After an
//! all-reduce every rank holds *bitwise* the same values (each segment is reduced once by its
//! owner and then copied), which is what keeps data-parallel replicas identical.
//!
//! [`nccl::Nccl`] is the GPU backend (NCCL loaded at run time through cudarc). Its tensor methods
//! work in place on CUDA memory; the slice methods stage through the device.

pub mod nccl;

use airlift_proto::tls::Tls;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

/// A collective group of `world` ranks.
pub trait Collective: Send {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// In place: every rank ends with the element-wise sum over ranks.
    fn all_reduce_sum(&mut self, data: &mut [f32]) -> io::Result<()>;
    /// In place: segment `r` of `data` (sizes `counts`) is rank r's contribution; every rank ends
    /// with every segment.
    fn all_gather(&mut self, data: &mut [f32], counts: &[usize]) -> io::Result<()>;
    /// In place: rank r ends with the sum over ranks of segment r (other segments are scratch).
    fn reduce_scatter_sum(&mut self, data: &mut [f32], counts: &[usize]) -> io::Result<()>;
    /// In place: every rank ends with `root`'s data.
    fn broadcast(&mut self, data: &mut [f32], root: usize) -> io::Result<()>;
    /// [`Collective::all_reduce_sum`] on a flat f32 tensor on any device. The default stages the
    /// values through host memory in [`GRAD_BUCKET`]-sized passes.
    fn all_reduce_sum_tensor(&mut self, t: &tch::Tensor) -> io::Result<()> {
        all_reduce_sum_staged(self, t)
    }
    /// [`Collective::all_gather`] on a flat f32 tensor on any device (staged through the host by
    /// default).
    fn all_gather_tensor(&mut self, t: &tch::Tensor, counts: &[usize]) -> io::Result<()> {
        all_gather_staged(self, t, counts)
    }
}

fn to_host(t: &tch::Tensor) -> io::Result<Vec<f32>> {
    Vec::<f32>::try_from(t.to_device(tch::Device::Cpu).to_kind(tch::Kind::Float).reshape([-1])).map_err(io::Error::other)
}

fn copy_back(t: &tch::Tensor, v: &[f32]) {
    let src = tch::Tensor::from_slice(v).view(t.size().as_slice()).to_kind(t.kind()).to_device(t.device());
    tch::no_grad(|| t.shallow_clone().copy_(&src));
}

fn all_reduce_sum_staged<C: Collective + ?Sized>(c: &mut C, t: &tch::Tensor) -> io::Result<()> {
    let mut v = to_host(t)?;
    // In buckets, so that one ring pass never holds more than GRAD_BUCKET values in flight.
    for bucket in v.chunks_mut(GRAD_BUCKET) {
        c.all_reduce_sum(bucket)?;
    }
    copy_back(t, &v);
    Ok(())
}

fn all_gather_staged<C: Collective + ?Sized>(c: &mut C, t: &tch::Tensor, counts: &[usize]) -> io::Result<()> {
    let mut v = to_host(t)?;
    c.all_gather(&mut v, counts)?;
    copy_back(t, &v);
    Ok(())
}

/// Near-equal split of `n` elements into `world` segments (the first ones one larger).
pub fn split_counts(n: usize, world: usize) -> Vec<usize> {
    airlift_proto::checkpoint::split_counts(n, world)
}

pub(crate) fn offsets(counts: &[usize]) -> Vec<usize> {
    counts
        .iter()
        .scan(0, |acc, &c| {
            let o = *acc;
            *acc += c;
            Some(o)
        })
        .collect()
}

/// The CPU ring over TCP.
pub struct TcpRing {
    rank: usize,
    world: usize,
    next: Option<Link>,
    prev: Option<Link>,
}

/// One connection of the ring: plain TCP, or TLS (mutual, with the job's certificates) when
/// `AIRLIFT_TLS` is set.
enum Link {
    Plain(TcpStream),
    Dialled(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    Accepted(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
}

impl Link {
    fn tcp(&self) -> &TcpStream {
        match self {
            Link::Plain(s) => s,
            Link::Dialled(s) => s.get_ref(),
            Link::Accepted(s) => s.get_ref(),
        }
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.read(buf),
            Link::Dialled(s) => s.read(buf),
            Link::Accepted(s) => s.read(buf),
        }
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.write(buf),
            Link::Dialled(s) => s.write(buf),
            Link::Accepted(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Link::Plain(s) => s.flush(),
            Link::Dialled(s) => s.flush(),
            Link::Accepted(s) => s.flush(),
        }
    }
}

/// The rustls settings of both sides of the ring, built once.
#[derive(Clone)]
pub struct RingTls {
    client: Arc<rustls::ClientConfig>,
    server: Arc<rustls::ServerConfig>,
}

impl RingTls {
    pub fn new(tls: &Tls) -> io::Result<Self> {
        Ok(RingTls {
            client: tls.ring_client().map_err(io::Error::other)?,
            server: tls.ring_server().map_err(io::Error::other)?,
        })
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// How long ranks wait for each other while connecting: covers peers that start a few
/// seconds apart (process start, model load).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(120);

impl TcpRing {
    /// Forms the ring. `listener` is this rank's bound socket (its address is `addrs[rank]`);
    /// `tag` (e.g. a hash of the run token) must match between peers. With `tls`, every link is
    /// mutual TLS with the job's certificates.
    pub fn connect(rank: usize, addrs: &[String], listener: TcpListener, tag: u64, tls: Option<&RingTls>) -> io::Result<Self> {
        Self::connect_within(rank, addrs, listener, tag, tls, CONNECT_TIMEOUT)
    }

    /// [`TcpRing::connect`], giving up after `patience` (the error names the pair that could not
    /// connect and their addresses).
    fn connect_within(rank: usize, addrs: &[String], listener: TcpListener, tag: u64, tls: Option<&RingTls>, patience: Duration) -> io::Result<Self> {
        let world = addrs.len();
        assert!(rank < world, "rank {rank} of {world}");
        if world == 1 {
            return Ok(TcpRing {
                rank,
                world,
                next: None,
                prev: None,
            });
        }
        let next_addr = addrs[(rank + 1) % world].clone();
        let my_addr = addrs[rank].clone();
        let client_tls = tls.map(|t| t.client.clone());
        let dialer = std::thread::spawn(move || -> io::Result<Link> {
            let start = std::time::Instant::now();
            loop {
                // One attempt may not wait for TCP's own SYN timeout (minutes) on an address that
                // does not answer (a partition, a firewall, an address of another network).
                let attempt = next_addr
                    .to_socket_addrs()
                    .and_then(|mut a| a.next().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address")))
                    .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(5)));
                match attempt {
                    Ok(s) => {
                        s.set_nodelay(true)?;
                        // A peer that accepts and then says nothing cannot hold the dialler.
                        s.set_read_timeout(Some(HELLO_TIMEOUT))?;
                        s.set_write_timeout(Some(HELLO_TIMEOUT))?;
                        let mut link = match &client_tls {
                            None => Link::Plain(s),
                            Some(cfg) => {
                                let conn = rustls::ClientConnection::new(cfg.clone(), Tls::server_name()).map_err(tls_error)?;
                                let mut st = rustls::StreamOwned::new(conn, s);
                                handshake(&mut st.conn, &mut st.sock)
                                    .map_err(|e| io::Error::new(e.kind(), format!("collective: TLS with rank {} at {next_addr}: {e}", (rank + 1) % world)))?;
                                Link::Dialled(Box::new(st))
                            }
                        };
                        link.write_all(&(rank as u64).to_le_bytes())?;
                        link.write_all(&tag.to_le_bytes())?;
                        link.flush()?;
                        link.tcp().set_read_timeout(None)?;
                        link.tcp().set_write_timeout(None)?;
                        return Ok(link);
                    }
                    Err(e) if start.elapsed() < patience => {
                        let _ = e;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!(
                                "collective: rank {rank} ({}) cannot reach rank {} at {next_addr} within {patience:?}: {e} (the learners must advertise addresses of a network they share: AIRLIFT_IFACE / AIRLIFT_ADDR under Slurm, --host by hand)",
                                my_addr,
                                (rank + 1) % world
                            ),
                        ))
                    }
                }
            }
        });
        let prev = match accept_peer(&listener, rank, world, tag, tls.map(|t| t.server.clone()), patience) {
            Ok(p) => p,
            // This rank's own dial failing says more (which pair cannot connect) than the
            // previous rank's silence; the dialler gives up at about the same time.
            Err(e) => return Err(dialer.join().expect("dialer thread").err().unwrap_or(e)),
        };
        let next = dialer.join().expect("dialer thread")?;
        Ok(TcpRing {
            rank,
            world,
            next: Some(next),
            prev: Some(prev),
        })
    }

    /// Sends `out` to the next rank while receiving `inp.len()` values from the previous one.
    fn exchange(&mut self, out: &[f32], inp: &mut [f32]) -> io::Result<()> {
        let next = self.next.as_mut().expect("ring of more than one rank");
        let prev = self.prev.as_mut().expect("ring of more than one rank");
        let out_bytes: &[u8] = bytemuck_f32(out);
        std::thread::scope(|s| -> io::Result<()> {
            let writer = s.spawn(|| next.write_all(out_bytes));
            let mut buf = vec![0u8; inp.len() * 4];
            let r = prev.read_exact(&mut buf);
            writer.join().expect("writer thread")?;
            r?;
            for (v, b) in inp.iter_mut().zip(buf.chunks_exact(4)) {
                *v = f32::from_le_bytes(b.try_into().unwrap());
            }
            Ok(())
        })
    }
}

fn bytemuck_f32(v: &[f32]) -> &[u8] {
    // SAFETY: f32 has no padding and any byte pattern is a valid u8; x86_64 / aarch64 are
    // little-endian, matching the `from_le_bytes` of the receiver.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}

impl Collective for TcpRing {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn reduce_scatter_sum(&mut self, data: &mut [f32], counts: &[usize]) -> io::Result<()> {
        let w = self.world;
        if w == 1 {
            return Ok(());
        }
        let off = offsets(counts);
        let r = self.rank;
        let mut inbox = Vec::new();
        for s in 0..w - 1 {
            let send = (r + 2 * w - s - 1) % w;
            let recv = (r + 2 * w - s - 2) % w;
            let out = data[off[send]..off[send] + counts[send]].to_vec();
            inbox.resize(counts[recv], 0.0);
            self.exchange(&out, &mut inbox)?;
            for (d, v) in data[off[recv]..off[recv] + counts[recv]].iter_mut().zip(&inbox) {
                *d += *v;
            }
        }
        Ok(())
    }

    fn all_gather(&mut self, data: &mut [f32], counts: &[usize]) -> io::Result<()> {
        let w = self.world;
        if w == 1 {
            return Ok(());
        }
        let off = offsets(counts);
        let r = self.rank;
        let mut inbox = Vec::new();
        for s in 0..w - 1 {
            let send = (r + w - s) % w;
            let recv = (r + 2 * w - s - 1) % w;
            let out = data[off[send]..off[send] + counts[send]].to_vec();
            inbox.resize(counts[recv], 0.0);
            self.exchange(&out, &mut inbox)?;
            data[off[recv]..off[recv] + counts[recv]].copy_from_slice(&inbox);
        }
        Ok(())
    }

    fn all_reduce_sum(&mut self, data: &mut [f32]) -> io::Result<()> {
        let counts = split_counts(data.len(), self.world);
        self.reduce_scatter_sum(data, &counts)?;
        self.all_gather(data, &counts)
    }

    fn broadcast(&mut self, data: &mut [f32], root: usize) -> io::Result<()> {
        let w = self.world;
        if w == 1 {
            return Ok(());
        }
        // Pass the buffer along the ring from root: rank root+k receives at step k−1 and forwards.
        let pos = (self.rank + w - root) % w;
        let next = self.next.as_mut().unwrap();
        let prev = self.prev.as_mut().unwrap();
        if pos != 0 {
            let mut buf = vec![0u8; data.len() * 4];
            prev.read_exact(&mut buf)?;
            for (v, b) in data.iter_mut().zip(buf.chunks_exact(4)) {
                *v = f32::from_le_bytes(b.try_into().unwrap());
            }
        }
        if pos != w - 1 {
            next.write_all(bytemuck_f32(data))?;
        }
        Ok(())
    }
}

/// How long a connection to a rank's collective port may take to say who it is.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts the previous rank's connection on `listener`: it must send its rank and the run's
/// `tag` within [`HELLO_TIMEOUT`]. Any other connection (idle, garbage, another run's, a wrong
/// rank) is dropped with a warning and the next one is awaited, until `patience` has passed: a
/// stranger cannot stall or end the run by connecting first.
fn accept_peer(listener: &TcpListener, rank: usize, world: usize, tag: u64, tls: Option<Arc<rustls::ServerConfig>>, patience: Duration) -> io::Result<Link> {
    let want = (rank + world - 1) % world;
    let start = std::time::Instant::now();
    listener.set_nonblocking(true)?;
    loop {
        let (s, addr) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if start.elapsed() > patience {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("collective: rank {want} did not connect to rank {rank} within {patience:?}"),
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(e),
        };
        s.set_nonblocking(false)?;
        s.set_read_timeout(Some(HELLO_TIMEOUT))?;
        s.set_write_timeout(Some(HELLO_TIMEOUT))?;
        let mut link = match &tls {
            None => Link::Plain(s),
            Some(cfg) => {
                let conn = match rustls::ServerConnection::new(cfg.clone()) {
                    Ok(c) => c,
                    Err(e) => return Err(tls_error(e)),
                };
                let mut st = rustls::StreamOwned::new(conn, s);
                if let Err(e) = handshake(&mut st.conn, &mut st.sock) {
                    // A plaintext peer, a certificate of another CA or none: a stranger.
                    tracing::warn!(%addr, rank, "collective: dropped a connection to this rank's port: TLS handshake failed ({e})");
                    continue;
                }
                Link::Accepted(Box::new(st))
            }
        };
        let mut hello = [0u8; 16];
        let why = match link.read_exact(&mut hello) {
            Err(e) => format!("no hello within {HELLO_TIMEOUT:?} ({e})"),
            Ok(()) => {
                let from = u64::from_le_bytes(hello[..8].try_into().unwrap());
                let their_tag = u64::from_le_bytes(hello[8..].try_into().unwrap());
                if their_tag != tag {
                    "not this run's token".to_string()
                } else if from != want as u64 {
                    format!("says it is rank {from}, expected rank {want}")
                } else {
                    link.tcp().set_read_timeout(None)?;
                    link.tcp().set_write_timeout(None)?;
                    link.tcp().set_nodelay(true)?;
                    return Ok(link);
                }
            }
        };
        tracing::warn!(%addr, rank, "collective: dropped a connection to this rank's port: {why}");
    }
}

/// Completes a TLS handshake on a blocking socket (the socket's timeouts bound it).
fn handshake<C, D>(conn: &mut C, sock: &mut TcpStream) -> io::Result<()>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<D>>,
{
    while conn.is_handshaking() {
        conn.complete_io(sock)?;
    }
    Ok(())
}

/// Forms a ring of `world` ranks inside one process (threads), for tests and benchmarks.
pub fn local_rings(world: usize) -> io::Result<Vec<TcpRing>> {
    let listeners: Vec<TcpListener> = (0..world).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<io::Result<_>>()?;
    let addrs: Vec<String> = listeners.iter().map(|l| l.local_addr().map(|a| a.to_string())).collect::<io::Result<_>>()?;
    let handles: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(r, l)| {
            let addrs = addrs.clone();
            std::thread::spawn(move || TcpRing::connect(r, &addrs, l, 42, None))
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("ring thread")).collect()
}

/// Gradient values all-reduced per ring pass (64 MiB of fp32): bounds the copies in flight.
pub const GRAD_BUCKET: usize = 16 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    /// A learner whose next rank advertised an address nobody listens on: the ring fails within
    /// its patience, naming both ranks and both addresses, instead of hanging.
    #[test]
    fn an_unreachable_peer_is_named_with_both_addresses() {
        let me = TcpListener::bind("127.0.0.1:0").unwrap();
        let unused = TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = unused.local_addr().unwrap().to_string();
        drop(unused);
        let addrs = vec![me.local_addr().unwrap().to_string(), dead.clone()];
        let start = std::time::Instant::now();
        let e = TcpRing::connect_within(0, &addrs, me, 7, None, Duration::from_millis(600))
            .err()
            .expect("no ring");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("rank 0 ({})", addrs[0])) && msg.contains(&format!("cannot reach rank 1 at {dead}")),
            "{msg}"
        );
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    }
}
