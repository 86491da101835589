//! Unit tests of the state machine that need its private parts (the scheduler scenarios are in
//! coordinator/tests/scheduler.rs).

use super::*;

fn cuda_run(learners: u32) -> RunState {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/default.toml")).unwrap();
    let mut cfg = RunConfig::from_toml(&text).unwrap();
    cfg.workers.device = airlift_proto::config::Device::Cuda;
    cfg.workers.learner = learners;
    RunState::new(cfg, std::env::temp_dir().join("airlift-state-test"))
}

fn register(st: &mut RunState, device: &str, rank: u32) -> Result<u64, Status> {
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let req = pb::RegisterRequest {
        role: pb::Role::Learner as i32,
        host: "h".into(),
        pid: 1,
        device: device.into(),
        flight_addr: format!("127.0.0.1:{}", 7000 + rank),
        collective_addr: format!("127.0.0.1:{}", 8000 + rank),
        rank,
        node: "n".into(),
    };
    st.handle(Event::Register { req, reply: tx });
    rx.try_recv().unwrap().map(|r| r.worker_id)
}

fn attach(st: &mut RunState, worker_id: u64) -> mpsc::Receiver<Result<pb::CoordinatorMessage, Status>> {
    let (tx, rx) = mpsc::channel(16);
    st.handle(Event::Attach {
        worker_id: WorkerId(worker_id),
        outbox: tx,
    });
    rx
}

fn rendezvous(rx: &mut mpsc::Receiver<Result<pb::CoordinatorMessage, Status>>) -> Option<pb::Rendezvous> {
    match rx.try_recv() {
        Ok(Ok(pb::CoordinatorMessage {
            kind: Some(Msg::Rendezvous(r)),
        })) => Some(r),
        _ => None,
    }
}

#[test]
fn cuda_rendezvous_waits_for_rank_zeros_nccl_id() {
    let mut st = cuda_run(2);
    let a = register(&mut st, "cuda:0", 1).unwrap();
    let b = register(&mut st, "cuda:0", 0).unwrap();
    let mut ra = attach(&mut st, a);
    let mut rb = attach(&mut st, b);
    // Only rank 0 (worker b, which asked for it) has its rendezvous, without an id.
    let r0 = rendezvous(&mut rb).expect("rank 0's rendezvous");
    assert_eq!((r0.rank, r0.world_size), (0, 2));
    assert!(r0.nccl_unique_id.is_empty());
    assert!(rendezvous(&mut ra).is_none(), "rank 1 must wait for the NCCL id");
    assert_eq!(st.phase, Phase::WaitingForWorkers);
    // An id from rank 1 is ignored.
    let id = vec![7u8; 128];
    let msg = |uid: Vec<u8>, worker_id: u64| Event::Message {
        worker_id: WorkerId(worker_id),
        msg: pb::WorkerMessage {
            worker_id,
            kind: Some(pb::worker_message::Kind::NcclId(pb::NcclId { unique_id: uid })),
        },
    };
    st.handle(msg(vec![1u8; 128], a));
    assert!(rendezvous(&mut ra).is_none());
    st.handle(msg(id.clone(), b));
    let r1 = rendezvous(&mut ra).expect("rank 1's rendezvous after the id");
    assert_eq!((r1.rank, r1.world_size), (1, 2));
    assert_eq!(r1.nccl_unique_id, id);
    assert_eq!(r1.collective_addrs, r0.collective_addrs);
    assert!(matches!(st.phase, Phase::WarmStart(_)), "{:?}", st.phase);
}

#[test]
fn rollout_workers_beyond_workers_rollout_are_refused() {
    let mut st = cuda_run(1);
    st.cfg.workers.rollout = 2;
    let req = || pb::RegisterRequest {
        role: pb::Role::Rollout as i32,
        host: "h".into(),
        pid: 1,
        device: "cuda:0".into(),
        ..Default::default()
    };
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        st.handle(Event::Register { req: req(), reply: tx });
        ids.push(rx.try_recv().unwrap().unwrap().worker_id);
    }
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    st.handle(Event::Register { req: req(), reply: tx });
    let e = rx.try_recv().unwrap().unwrap_err();
    assert!(e.code() == tonic::Code::ResourceExhausted && e.message().contains("workers.rollout"), "{e}");
    // A lost worker's place is free again.
    st.set_state(WorkerId(ids[0]), WorkerState::Lost { why: "test".into() });
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    st.handle(Event::Register { req: req(), reply: tx });
    assert!(rx.try_recv().unwrap().is_ok());
}

#[test]
fn a_cpu_worker_is_refused_by_a_cuda_run() {
    let mut st = cuda_run(1);
    let e = register(&mut st, "cpu", 0).unwrap_err();
    assert!(
        e.message().contains("workers.device = \"cuda\"") && e.message().contains("`cpu`"),
        "{}",
        e.message()
    );
}
