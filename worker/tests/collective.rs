//! The CPU ring collectives against sums done in one process, for 2 and 3 ranks and lengths
//! not divisible by the rank count.

use airlift_worker::collective::{local_rings, split_counts, Collective};
use airlift_worker::rng::SplitMix64;

fn data(rank: usize, n: usize, integers: bool) -> Vec<f32> {
    let mut g = SplitMix64::for_stream(rank as u64, n as u64);
    (0..n)
        .map(|_| {
            if integers {
                g.range(-1000, 1000) as f32
            } else {
                (g.next_f64() * 2.0 - 1.0) as f32
            }
        })
        .collect()
}

fn run<F: Fn(&mut dyn Collective) -> Vec<f32> + Send + Sync + Copy + 'static>(world: usize, f: F) -> Vec<Vec<f32>> {
    let rings = local_rings(world).unwrap();
    let handles: Vec<_> = rings.into_iter().map(|mut r| std::thread::spawn(move || f(&mut r))).collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn all_reduce_equals_a_single_process_sum() {
    for world in [2usize, 3] {
        for n in [1usize, 7, 1000, 100_003] {
            for integers in [true, false] {
                let inputs: Vec<Vec<f32>> = (0..world).map(|r| data(r, n, integers)).collect();
                let want: Vec<f32> = (0..n).map(|i| inputs.iter().map(|v| v[i]).sum()).collect();
                let got = run(world, move |c| {
                    let mut v = data(c.rank(), n, integers);
                    c.all_reduce_sum(&mut v).unwrap();
                    v
                });
                for (r, g) in got.iter().enumerate() {
                    assert_eq!(g.len(), n);
                    if integers {
                        assert_eq!(g, &want, "world {world}, n {n}, rank {r}");
                    } else {
                        let err = g.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                        assert!(err < 1e-5, "world {world}, n {n}, rank {r}: {err}");
                    }
                }
                // Every rank holds bitwise the same result.
                assert!(got.iter().all(|g| g.iter().zip(&got[0]).all(|(a, b)| a.to_bits() == b.to_bits())));
            }
        }
    }
}

#[test]
fn all_gather_reduce_scatter_and_broadcast() {
    for world in [2usize, 3] {
        let n = 10;
        let counts = split_counts(n, world);
        let got = run(world, move |c| {
            let counts = split_counts(n, c.world());
            let off: usize = counts[..c.rank()].iter().sum();
            let mut v = vec![-1.0; n];
            for i in 0..counts[c.rank()] {
                v[off + i] = (off + i) as f32;
            }
            c.all_gather(&mut v, &counts).unwrap();
            v
        });
        assert!(
            got.iter().all(|g| g == &(0..n).map(|i| i as f32).collect::<Vec<_>>()),
            "all-gather {world}: {got:?}"
        );
        let got = run(world, move |c| {
            let mut v = vec![c.rank() as f32 + 1.0; n];
            c.reduce_scatter_sum(&mut v, &split_counts(n, c.world())).unwrap();
            v
        });
        let total = (1..=world).sum::<usize>() as f32;
        for (r, g) in got.iter().enumerate() {
            let off: usize = counts[..r].iter().sum();
            assert!(g[off..off + counts[r]].iter().all(|&x| x == total), "reduce-scatter rank {r}: {g:?}");
        }
        let got = run(world, move |c| {
            let mut v = if c.rank() == 1 { vec![5.0, 6.0, 7.0] } else { vec![0.0; 3] };
            c.broadcast(&mut v, 1).unwrap();
            v
        });
        assert!(got.iter().all(|g| g == &[5.0, 6.0, 7.0]), "broadcast {world}: {got:?}");
    }
}

// ---- NCCL (cudarc, loaded at run time) -------------------------------------------------------

use airlift_worker::collective::nccl::{self, Nccl, NcclError};

#[test]
fn nccl_unique_ids_are_fresh_where_libnccl_loads() {
    if !nccl::available() {
        eprintln!("skipped: libnccl is not loadable here");
        assert!(matches!(nccl::unique_id(), Err(NcclError::NoLibrary)));
        return;
    }
    // ncclGetUniqueId needs no GPU: it opens NCCL's bootstrap listener.
    let a = nccl::unique_id().unwrap();
    let b = nccl::unique_id().unwrap();
    assert_eq!(a.len(), nccl::UNIQUE_ID_BYTES);
    assert_ne!(a, b);
    eprintln!("NCCL {}", nccl::version().unwrap());
}

#[test]
fn nccl_without_a_gpu_is_a_clear_error() {
    if tch::Cuda::is_available() {
        eprintln!("skipped: this host has a CUDA device");
        return;
    }
    let e = Nccl::init(0, 1, &[0u8; nccl::UNIQUE_ID_BYTES]).err().expect("no GPU, no communicator");
    assert!(matches!(e, NcclError::NoDevice | NcclError::NoLibrary), "{e}");
    assert!(e.to_string().contains("CUDA") || e.to_string().contains("libnccl"), "{e}");
}

/// On a GPU host: one rank's communicator runs every collective on CUDA memory (tensor path) and
/// through host staging (slice path), with segments not divisible evenly. Several ranks need
/// several GPUs (NCCL refuses two ranks on one device); the whole-run test covers those.
#[test]
fn nccl_collectives_on_one_gpu() {
    if !tch::Cuda::is_available() {
        eprintln!("skipped: no CUDA device");
        return;
    }
    let id = nccl::unique_id().unwrap();
    let mut c = Nccl::init(0, 1, &id).unwrap();
    let dev = tch::Device::Cuda(0);
    let host = data(0, 100_003, false);
    let t = tch::Tensor::from_slice(&host).to_device(dev);
    c.all_reduce_sum_tensor(&t).unwrap();
    c.all_gather_tensor(&t, &[100_003]).unwrap();
    c.broadcast_device(&t, 0).unwrap();
    c.reduce_scatter_sum_device(&t, &[100_003]).unwrap();
    assert_eq!(Vec::<f32>::try_from(t.to_device(tch::Device::Cpu)).unwrap(), host);
    let mut v = host.clone();
    c.all_reduce_sum(&mut v).unwrap();
    c.all_gather(&mut v, &[100_003]).unwrap();
    assert_eq!(v, host);
    // Wrong tensors are refused, naming what was expected.
    let bad = tch::Tensor::zeros([4], (tch::Kind::Double, dev));
    assert!(c.all_reduce_sum_device(&bad).unwrap_err().to_string().contains("f32"));
    assert!(c.all_gather_device(&t, &[3, 4]).is_err());
}

/// Strangers on a rank's collective port before the ring forms — one that connects and says
/// nothing, one that sends 16 random bytes, one with another run's tag, one claiming a wrong
/// rank — are dropped, and the ring still forms and sums right.
#[test]
fn strangers_on_the_collective_port_do_not_stall_or_end_the_ring() {
    use airlift_worker::collective::TcpRing;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    let listeners: Vec<TcpListener> = (0..2).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let addrs: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
    // Connected before the ranks accept: they sit in the listen backlog ahead of the real peer.
    let idle = TcpStream::connect(&addrs[0]).unwrap();
    let mut garbage = TcpStream::connect(&addrs[0]).unwrap();
    garbage.write_all(&[0xA5; 16]).unwrap();
    let mut other_run = TcpStream::connect(&addrs[1]).unwrap();
    other_run.write_all(&0u64.to_le_bytes()).unwrap();
    other_run.write_all(&7u64.to_le_bytes()).unwrap();
    let mut wrong_rank = TcpStream::connect(&addrs[1]).unwrap();
    wrong_rank.write_all(&5u64.to_le_bytes()).unwrap();
    wrong_rank.write_all(&42u64.to_le_bytes()).unwrap();
    let t = std::time::Instant::now();
    let handles: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(r, l)| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                let mut ring = TcpRing::connect(r, &addrs, l, 42, None)?;
                let mut v = vec![r as f32 + 1.0; 5];
                ring.all_reduce_sum(&mut v)?;
                Ok::<_, std::io::Error>(v)
            })
        })
        .collect();
    for h in handles {
        let v = h.join().unwrap().expect("the ring forms despite the strangers");
        assert_eq!(v, vec![3.0; 5]);
    }
    println!("ring formed in {:.1} s past 4 strangers", t.elapsed().as_secs_f64());
    drop(idle);
}

/// With the job's TLS files every link of the ring is mutual TLS: 3 ranks sum 1M values (many
/// TLS records) to the same bits as the plaintext ring, past a plaintext peer sending the right
/// hello and a TLS peer of another job's CA, both dropped at the handshake.
#[test]
fn a_tls_ring_sums_like_a_plaintext_one_and_drops_peers_without_the_jobs_certificate() {
    use airlift_proto::tls::{self, Tls};
    use airlift_worker::collective::{RingTls, TcpRing};
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    let dir = std::env::temp_dir().join(format!("airlift-tls-ring-{}", std::process::id()));
    tls::init(&dir.join("job")).unwrap();
    tls::init(&dir.join("other")).unwrap();
    let job = RingTls::new(&Tls::load(&dir.join("job"), true).unwrap()).unwrap();
    let other = Tls::load(&dir.join("other"), true).unwrap().ring_client().unwrap();
    const N: usize = 1 << 20;
    let n = N;
    let values = |r: usize| -> Vec<f32> { (0..N).map(|i| ((i * 7 + r * 13) % 1000) as f32 * 0.001 + r as f32).collect() };
    let ring = |tls: Option<RingTls>, strangers: bool| -> Vec<Vec<f32>> {
        let listeners: Vec<TcpListener> = (0..3).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let addrs: Vec<String> = listeners.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
        let mut keep = Vec::new();
        if strangers {
            let mut plain = TcpStream::connect(&addrs[0]).unwrap();
            plain.write_all(&2u64.to_le_bytes()).unwrap();
            plain.write_all(&42u64.to_le_bytes()).unwrap();
            keep.push(plain);
            let addr = addrs[1].clone();
            let other = other.clone();
            std::thread::spawn(move || {
                let s = TcpStream::connect(&addr).unwrap();
                let conn = rustls::ClientConnection::new(other, Tls::server_name()).unwrap();
                let mut st = rustls::StreamOwned::new(conn, s);
                let _ = st.write_all(&0u64.to_le_bytes());
                let _ = st.flush();
            });
        }
        let handles: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(r, l)| {
                let addrs = addrs.clone();
                let tls = tls.clone();
                std::thread::spawn(move || {
                    let mut ring = TcpRing::connect(r, &addrs, l, 42, tls.as_ref())?;
                    let mut v = values(r);
                    ring.all_reduce_sum(&mut v)?;
                    Ok::<_, std::io::Error>(v)
                })
            })
            .collect();
        let out = handles.into_iter().map(|h| h.join().unwrap().expect("the ring forms")).collect();
        drop(keep);
        out
    };
    let plain = ring(None, false);
    let t = std::time::Instant::now();
    let secure = ring(Some(job), true);
    println!("TLS ring: 3 ranks, 2^20 values, past 2 strangers in {:.2} s", t.elapsed().as_secs_f64());
    assert_eq!(plain[0].len(), n);
    for r in 0..3 {
        assert!(plain[r].iter().zip(&secure[r]).all(|(a, b)| a.to_bits() == b.to_bits()), "rank {r}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
