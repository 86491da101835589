//! The scheduler without a network: the coordinator's state machine ([`RunState`]) driven by
//! fake workers through the same events the gRPC edge sends it, on tokio's paused clock, so
//! that leases, heartbeats and loss detection are tested in milliseconds instead of minutes of
//! real processes. The real-process tests (tests/tests/run.rs, checkpoint.rs) stay as the
//! end-to-end layer.

use airlift_coordinator::effects::Executor;
use airlift_coordinator::state::{Effect, Event, Learners, Phase, RunState, WorkerId};
use airlift_proto::checkpoint as ckpt;
use airlift_proto::config::{Millis, RunConfig};
use airlift_proto::pb::{self, coordinator_message::Kind as Msg};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tonic::Status;

/// A small training run: no warm starts, no held-out evaluation, no checkpoints unless asked.
fn config(rollout: u32, learner: u32, iterations: u64, extra: impl FnOnce(&mut RunConfig)) -> RunConfig {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/default.toml")).unwrap();
    let mut c = RunConfig::from_toml(&text).unwrap();
    c.run.iterations = iterations;
    c.workers.rollout = rollout;
    c.workers.learner = learner;
    c.workers.heartbeat_ms = Millis(1000);
    c.workers.lost_after_ms = Millis(10_000);
    c.workers.task_lease_ms = Millis(60_000);
    c.data.prompts_per_iteration = 4;
    c.data.prompts_per_task = 1;
    c.data.eval_prompts = 0;
    c.sft.steps = 0;
    c.reward.warm_start_steps = 0;
    c.checkpoint.every = 0;
    c.checkpoint.at_end = false;
    extra(&mut c);
    c
}

/// A fake worker: its id and the receiving end of its attached stream.
struct Fake {
    id: u64,
    rx: mpsc::Receiver<Result<pb::CoordinatorMessage, Status>>,
}

impl Fake {
    /// The next message the coordinator sent it, if any.
    fn next(&mut self) -> Option<Msg> {
        match self.rx.try_recv() {
            Ok(Ok(m)) => m.kind,
            _ => None,
        }
    }

    /// Every message waiting.
    fn drain(&mut self) -> Vec<Msg> {
        std::iter::from_fn(|| self.next()).collect()
    }
}

struct Harness {
    st: RunState,
    /// The coordinator's effect executor (real files in a temporary folder), run inline: the
    /// effects of an event are carried out right after it, and the events they answer handled
    /// at once, unless `hold` keeps them back (in `held`) to look at the state in between.
    exec: Executor,
    hold: bool,
    held: Vec<Effect>,
    _dir: std::path::PathBuf,
}

impl Harness {
    fn new(cfg: RunConfig, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("airlift-scheduler-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Harness {
            st: RunState::new(cfg, dir.clone()),
            exec: Executor::new(dir.clone()),
            hold: false,
            held: Vec::new(),
            _dir: dir,
        }
    }

    /// Gives the state one event, as the loop does, and carries out what it decided.
    fn handle(&mut self, ev: Event) {
        let mut events = VecDeque::from([ev]);
        while let Some(ev) = events.pop_front() {
            for e in self.st.handle(ev) {
                if self.hold {
                    self.held.push(e);
                } else if let Some(back) = self.exec.run(e) {
                    events.push_back(back);
                }
            }
        }
    }

    /// Carries out the effects `hold` kept back (and lets the next ones through).
    fn release(&mut self) {
        self.hold = false;
        for e in std::mem::take(&mut self.held) {
            if let Some(back) = self.exec.run(e) {
                self.handle(back);
            }
        }
    }

    fn join(&mut self, role: pb::Role, rank: u32) -> Fake {
        let (reply, mut answer) = oneshot::channel();
        let learner = role == pb::Role::Learner;
        let req = pb::RegisterRequest {
            role: role as i32,
            host: format!("node-{rank}"),
            device: "cpu".into(),
            flight_addr: if learner { format!("10.0.0.{rank}:7000") } else { String::new() },
            collective_addr: if learner { format!("10.0.0.{rank}:7001") } else { String::new() },
            rank,
            pid: 1,
            node: format!("node{rank}"),
        };
        self.handle(Event::Register { req, reply });
        let id = answer.try_recv().unwrap().expect("registered").worker_id;
        let (tx, rx) = mpsc::channel(64);
        self.handle(Event::Attach {
            worker_id: WorkerId(id),
            outbox: tx,
        });
        Fake { id, rx }
    }

    fn report(&mut self, w: &Fake, task_id: u64, metrics: serde_json::Value) {
        self.report_with(w, task_id, metrics, None);
    }

    fn report_with(&mut self, w: &Fake, task_id: u64, metrics: serde_json::Value, result: Option<pb::task_report::Result>) {
        let (reply, _ack) = oneshot::channel();
        let report = pb::TaskReport {
            worker_id: w.id,
            task_id,
            ok: true,
            error: String::new(),
            rows: 0,
            metrics_json: metrics.to_string(),
            result,
        };
        self.handle(Event::Report { report, reply });
    }

    /// Reports a checkpoint task with rank 0's shard `file` (empty layouts unless given).
    fn report_shard(&mut self, w: &Fake, task_id: u64, file: ckpt::FileEntry, layouts: &[&str]) {
        let empty = ckpt::FlatLayout {
            names: vec![],
            shapes: vec![],
            offsets: vec![],
            total: 0,
        };
        let layouts = layouts.iter().map(|n| (n.to_string(), empty.clone())).collect();
        let shard = ckpt::wire::shard_written(&file, &layouts, &Default::default());
        self.report_with(w, task_id, serde_json::json!({}), Some(pb::task_report::Result::Shard(shard)));
    }

    /// Answers every rollout task `w` is handed (one at a time, as a worker does) until none
    /// is left for it; returns them in order.
    fn work_through(&mut self, w: &mut Fake) -> Vec<pb::RolloutTask> {
        let mut done = Vec::new();
        while let Some(m) = w.next() {
            let t = rollout(m);
            self.report(w, t.task_id, rows(&t));
            done.push(t);
        }
        done
    }

    fn beat(&mut self, w: &Fake) {
        let msg = pb::WorkerMessage {
            worker_id: w.id,
            kind: Some(pb::worker_message::Kind::Heartbeat(pb::Heartbeat {})),
        };
        self.handle(Event::Message {
            worker_id: WorkerId(w.id),
            msg,
        });
    }

    fn status(&mut self) -> pb::StatusResponse {
        let (reply, mut rx) = oneshot::channel();
        self.handle(Event::Status { reply });
        rx.try_recv().unwrap()
    }

    fn worker_state(&mut self, w: &Fake) -> String {
        self.status().workers.into_iter().find(|s| s.worker_id == w.id).unwrap().state
    }

    /// Advances the paused clock by `ms` in heartbeat-sized steps, ticking the loop each time and
    /// keeping the workers of `alive` heartbeating.
    async fn pass(&mut self, ms: u64, alive: &[&Fake]) {
        let step = 1000;
        let mut left = ms;
        while left > 0 {
            let d = left.min(step);
            tokio::time::advance(Duration::from_millis(d)).await;
            left -= d;
            for w in alive {
                self.beat(w);
            }
            self.handle(Event::Tick);
        }
    }
}

fn rollout(m: Msg) -> pb::RolloutTask {
    match m {
        Msg::Rollout(t) => t,
        other => panic!("expected a rollout task, got {other:?}"),
    }
}

/// A checkpoint task's folder (panics on another kind of task).
fn checkpoint_dir(t: &pb::LearnerTask) -> &str {
    match &t.work {
        Some(pb::learner_task::Work::Checkpoint(c)) => &c.dir,
        _ => panic!("a checkpoint task: {t:?}"),
    }
}

fn learner_task(m: Msg) -> pb::LearnerTask {
    match m {
        Msg::Learner(t) => t,
        other => panic!("expected a learner task, got {other:?}"),
    }
}

/// The one learner's rendezvous, then nothing.
fn rendezvous(l: &mut Fake) {
    assert!(matches!(l.next(), Some(Msg::Rendezvous(_))), "the learner's rendezvous comes first");
}

fn rows(t: &pb::RolloutTask) -> serde_json::Value {
    let rows = t.prompt_ids.len() as u64 * t.samples_per_prompt as u64;
    serde_json::json!({ "rows": rows, "tokens": rows * 10, "correct": 0 })
}

#[tokio::test(start_paused = true)]
async fn a_lost_rollout_workers_task_goes_to_another_and_is_counted_once() {
    let mut h = Harness::new(config(2, 1, 1, |_| {}), "lost");
    let mut l = h.join(pb::Role::Learner, 0);
    let mut a = h.join(pb::Role::Rollout, 0);
    let mut b = h.join(pb::Role::Rollout, 1);
    rendezvous(&mut l);
    assert!(matches!(h.st.phase, Phase::Running(_)), "{:?}", h.st.phase);
    // One task each (a worker holds one task at a time); two stay queued.
    let ta = rollout(a.next().expect("a's task"));
    let tb = rollout(b.next().expect("b's task"));
    assert_eq!(h.status().queued_tasks, 2);
    // a goes silent; b keeps heartbeating and works through the queue.
    h.report(&b, tb.task_id, rows(&tb));
    let tb2 = rollout(b.next().unwrap());
    h.pass(10_000, &[&b, &l]).await;
    assert_eq!(h.worker_state(&a), format!("busy (task {})", ta.task_id), "10 s silent is not lost yet");
    h.pass(2_000, &[&b, &l]).await;
    assert_eq!(h.worker_state(&a), "lost");
    // a's task was put first in the queue: b gets it after its current one.
    h.report(&b, tb2.task_id, rows(&tb2));
    let again = rollout(b.next().unwrap());
    assert_eq!(again.task_id, ta.task_id, "the lost worker's task is handed out again first");
    assert_eq!(again.prompt_ids, ta.prompt_ids);
    // a's late report is ignored: its task now belongs to b.
    h.report(&a, ta.task_id, rows(&ta));
    assert!(l.next().is_none(), "no learning before every rollout task is done");
    h.report(&b, again.task_id, rows(&again));
    let last = rollout(b.next().unwrap());
    h.report(&b, last.task_id, rows(&last));
    // Learning starts once; the record counts each of the four tasks once.
    let it = learner_task(l.next().expect("the iteration's learner task"));
    assert_eq!(it.iteration, 1);
    let Some(pb::learner_task::Work::IterationWork(work)) = &it.work else {
        panic!("an iteration: {it:?}")
    };
    assert_eq!(work.rollout_task_ids.len(), 4);
    assert!(l.next().is_none());
    h.report(&l, it.task_id, serde_json::json!({ "disc_loss": 0.5 }));
    assert_eq!(h.st.phase, Phase::Done);
    let rec = h.st.records.last().unwrap();
    assert_eq!(rec["rollout"]["tasks"], 4);
    assert_eq!(rec["rollout"]["rows"], 16.0);
}

#[tokio::test(start_paused = true)]
async fn a_stuck_worker_loses_its_task_when_the_lease_runs_out_and_its_late_report_is_ignored() {
    let mut h = Harness::new(config(2, 1, 1, |c| c.workers.task_lease_ms = Millis(30_000)), "lease");
    let mut l = h.join(pb::Role::Learner, 0);
    let mut a = h.join(pb::Role::Rollout, 0);
    let mut b = h.join(pb::Role::Rollout, 1);
    rendezvous(&mut l);
    let ta = rollout(a.next().unwrap());
    // b does everything else; a heartbeats but never reports.
    assert_eq!(h.work_through(&mut b).len(), 3);
    h.pass(29_000, &[&a, &b, &l]).await;
    assert!(b.next().is_none(), "the lease has not run out yet");
    h.pass(2_000, &[&a, &b, &l]).await;
    let again = rollout(b.next().expect("the expired task, re-queued"));
    assert_eq!(again.task_id, ta.task_id);
    assert_eq!(
        h.worker_state(&a),
        format!("busy (task {})", ta.task_id),
        "a heartbeating worker is not lost; it takes no new work until it reports"
    );
    h.report(&a, ta.task_id, rows(&ta));
    assert!(l.next().is_none(), "the stale report does not complete the task");
    assert_eq!(h.worker_state(&a), "idle", "after its (ignored) report it may work again");
    h.report(&b, again.task_id, rows(&again));
    let it = learner_task(l.next().unwrap());
    h.report(&l, it.task_id, serde_json::json!({}));
    assert_eq!(h.st.phase, Phase::Done);
    assert_eq!(h.st.records.last().unwrap()["rollout"]["tasks"], 4);
}

#[tokio::test(start_paused = true)]
async fn staleness_bounds_how_far_rollouts_run_ahead_of_learning() {
    for staleness in [0u64, 1] {
        let mut h = Harness::new(config(1, 1, 3, |c| c.run.max_staleness = staleness), &format!("stale{staleness}"));
        let mut l = h.join(pb::Role::Learner, 0);
        let mut r = h.join(pb::Role::Rollout, 0);
        rendezvous(&mut l);
        // Work through iteration 1's rollouts without reporting the learner task.
        let seen: Vec<(u64, u64)> = h.work_through(&mut r).iter().map(|t| (t.iteration, t.policy_version)).collect();
        let it1 = learner_task(l.next().expect("iteration 1 learns"));
        assert_eq!(it1.iteration, 1);
        let ahead: Vec<_> = seen.iter().filter(|(i, _)| *i == 2).collect();
        if staleness == 0 {
            assert_eq!(seen.len(), 4, "max_staleness = 0: nothing of iteration 2 before 1 is learned");
            assert!(ahead.is_empty());
        } else {
            assert_eq!(seen.len(), 8, "max_staleness = 1: iteration 2's rollouts run beside 1's learning");
            assert!(ahead.iter().all(|(_, v)| *v == 0), "... with the policy iteration 1 sampled with");
            assert!(seen.iter().all(|(i, _)| *i <= 2), "never two ahead");
        }
        // Iteration 1 learned: policy version 1; the next rollouts say so.
        h.report(&l, it1.task_id, serde_json::json!({}));
        let next = r.drain().into_iter().map(rollout).collect::<Vec<_>>();
        let want = if staleness == 0 { (2, 1) } else { (3, 1) };
        assert!(
            !next.is_empty() && next.iter().all(|t| (t.iteration, t.policy_version) == want),
            "{staleness}: {next:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn drain_finishes_the_iteration_being_learned_then_checkpoints_then_stops() {
    let mut h = Harness::new(config(1, 1, 5, |_| {}), "drain");
    let mut l = h.join(pb::Role::Learner, 0);
    let mut r = h.join(pb::Role::Rollout, 0);
    rendezvous(&mut l);
    h.work_through(&mut r);
    let it1 = learner_task(l.next().unwrap());
    h.handle(Event::Drain { reason: "SIGTERM".into() });
    assert_eq!(h.st.phase, Phase::Running(Learners::Learning(1)), "the iteration being learned finishes");
    h.report(&l, it1.task_id, serde_json::json!({}));
    assert!(r.next().is_none(), "no rollouts of iteration 2 after a drain");
    let ck = learner_task(l.next().expect("a checkpoint before stopping"));
    assert_eq!(ck.iteration, 1);
    std::fs::create_dir_all(checkpoint_dir(&ck)).unwrap();
    let file = ckpt::FileEntry {
        name: "rank-0.safetensors".into(),
        rank: 0,
        bytes: 0,
        sha256: String::new(),
    };
    h.report_shard(&l, ck.task_id, file, &[]);
    assert!(matches!(&h.st.phase, Phase::Stopped(why) if why == "SIGTERM"), "{:?}", h.st.phase);
    assert!(std::path::Path::new(checkpoint_dir(&ck)).join("manifest.json").exists());
    assert!(matches!(l.next(), Some(Msg::Shutdown(_))));
    assert!(matches!(r.next(), Some(Msg::Shutdown(_))));
}

#[tokio::test(start_paused = true)]
async fn a_second_signal_stops_at_once() {
    let mut h = Harness::new(config(1, 1, 5, |_| {}), "drain2");
    let mut l = h.join(pb::Role::Learner, 0);
    let _r = h.join(pb::Role::Rollout, 0);
    rendezvous(&mut l);
    h.handle(Event::Drain { reason: "SIGTERM".into() });
    h.handle(Event::Drain { reason: "SIGINT".into() });
    assert!(
        matches!(&h.st.phase, Phase::Failed(why) if why.contains("without a checkpoint")),
        "{:?}",
        h.st.phase
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_learner_without_restarts_fails_the_run_and_says_how_to_continue() {
    let mut h = Harness::new(config(1, 1, 2, |_| {}), "learner");
    let mut l = h.join(pb::Role::Learner, 0);
    let r = h.join(pb::Role::Rollout, 0);
    rendezvous(&mut l);
    h.pass(11_000, &[&r]).await;
    match &h.st.phase {
        Phase::Failed(why) => assert!(why.contains("missed its heartbeats") && why.contains("--resume"), "{why}"),
        other => panic!("expected a failed run, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_last_rollout_worker_failing_ends_the_run_with_its_error() {
    let mut h = Harness::new(config(1, 1, 2, |_| {}), "fatal");
    let mut l = h.join(pb::Role::Learner, 0);
    let r = h.join(pb::Role::Rollout, 0);
    rendezvous(&mut l);
    let msg = pb::WorkerMessage {
        worker_id: r.id,
        kind: Some(pb::worker_message::Kind::Fatal(pb::Fatal {
            error: "model folder missing".into(),
        })),
    };
    h.handle(Event::Message {
        worker_id: WorkerId(r.id),
        msg,
    });
    match &h.st.phase {
        Phase::Failed(why) => assert!(why.contains("no rollout worker left") && why.contains("model folder missing"), "{why}"),
        other => panic!("expected a failed run, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn tasks_wait_for_a_late_rollout_worker_and_a_replacement_is_taken_after_a_loss() {
    let mut h = Harness::new(config(1, 1, 1, |_| {}), "late");
    let mut l = h.join(pb::Role::Learner, 0);
    rendezvous(&mut l);
    assert_eq!(h.status().queued_tasks, 4, "queued with no rollout worker yet");
    let mut a = h.join(pb::Role::Rollout, 0);
    let ta = rollout(a.next().expect("the first task on attach"));
    h.pass(11_000, &[&l]).await;
    assert_eq!(h.worker_state(&a), "lost");
    // workers.rollout = 1: a replacement is taken now that a is lost.
    let mut b = h.join(pb::Role::Rollout, 1);
    let tb = rollout(b.next().unwrap());
    assert_eq!(tb.task_id, ta.task_id);
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_report_without_its_shard_fails_the_run_naming_the_task() {
    let mut h = Harness::new(config(1, 1, 5, |_| {}), "no-shard");
    let mut l = h.join(pb::Role::Learner, 0);
    let mut r = h.join(pb::Role::Rollout, 0);
    rendezvous(&mut l);
    h.work_through(&mut r);
    let it1 = learner_task(l.next().unwrap());
    h.handle(Event::Drain { reason: "SIGTERM".into() });
    h.report(&l, it1.task_id, serde_json::json!({}));
    let ck = learner_task(l.next().expect("a checkpoint before stopping"));
    // An old worker's report: the shard only as JSON metrics, which the coordinator no longer reads.
    h.report(&l, ck.task_id, serde_json::json!({ "file": { "name": "rank-0.safetensors" } }));
    let want = format!("checkpoint task {} (rank 0): the report carries no shard", ck.task_id);
    assert!(matches!(&h.st.phase, Phase::Failed(why) if why.contains(&want)), "{:?}", h.st.phase);
}

/// Reports learner `l`'s checkpoint task `ck` with one real (empty) shard file, so that the
/// checkpoint verifies.
fn write_checkpoint(h: &mut Harness, l: &Fake, ck: &pb::LearnerTask) {
    let dir = std::path::Path::new(checkpoint_dir(ck));
    std::fs::create_dir_all(dir).unwrap();
    let name = airlift_proto::checkpoint::shard_name(0, 1);
    std::fs::write(dir.join(&name), b"").unwrap();
    let file = ckpt::FileEntry {
        name,
        rank: 0,
        bytes: 0,
        sha256: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into(),
    };
    h.report_shard(l, ck.task_id, file, &["policy", "reward"]);
}

/// One learner and one rollout worker join; iteration 1 is rolled out and learned and its
/// checkpoint written (checkpoint.every = 1). Returns the workers and the checkpoint task.
fn through_the_first_checkpoint(h: &mut Harness) -> (Fake, Fake, pb::LearnerTask) {
    let mut l = h.join(pb::Role::Learner, 0);
    let mut r = h.join(pb::Role::Rollout, 0);
    rendezvous(&mut l);
    h.work_through(&mut r);
    let it1 = learner_task(l.next().unwrap());
    h.report(&l, it1.task_id, serde_json::json!({}));
    let ck = learner_task(l.next().expect("the checkpoint after iteration 1"));
    write_checkpoint(h, &l, &ck);
    (l, r, ck)
}

#[tokio::test(start_paused = true)]
async fn a_learner_restart_late_in_a_run_verifies_off_the_loop_and_gives_the_new_learners_their_time() {
    let mut h = Harness::new(config(1, 1, 3, |c| c.checkpoint.every = 1), "restart");
    let (respawn, mut generations) = mpsc::unbounded_channel();
    h.st.enable_restarts(respawn);
    let (mut l, mut r, ck) = through_the_first_checkpoint(&mut h);
    // Iteration 2 runs for longer than workers.register_timeout_ms (600 s) in all ...
    h.work_through(&mut r);
    let _it2 = learner_task(l.next().expect("iteration 2 learns"));
    h.pass(700_000, &[&l, &r]).await;
    // ... then its learner goes silent.
    h.hold = true;
    h.pass(11_000, &[&r]).await;
    assert_eq!(h.st.phase, Phase::WaitingForWorkers);
    assert!(generations.try_recv().is_err(), "no respawn before the checkpoints are verified");
    // Verification is an effect (the executor runs it off the loop) that reports back.
    assert!(matches!(h.held.as_slice(), [Effect::FindRestartPoint { reached: 2, .. }]), "{:?}", h.held);
    h.release();
    assert_eq!(generations.try_recv().ok(), Some(1), "the learners are started again ({:?})", h.st.phase);
    let rec = h.st.records.iter().find(|r| r.get("restart").is_some()).expect("a restart record");
    assert_eq!(rec["checkpoint_iteration"], 1);
    assert_eq!(rec["redone"], serde_json::json!([2]));
    // The new learner has register_timeout_ms from the restart, not from the run's start.
    h.pass(5_000, &[&r]).await;
    assert_eq!(h.st.phase, Phase::WaitingForWorkers, "{:?}", h.st.phase);
    let mut l2 = h.join(pb::Role::Learner, 0);
    match l2.next() {
        Some(Msg::Rendezvous(rdv)) => assert_eq!(rdv.resume_checkpoint, checkpoint_dir(&ck)),
        other => panic!("expected a rendezvous, got {other:?}"),
    }
    // Iteration 2 is done again from the checkpoint's frontier.
    let again: Vec<_> = r.drain().into_iter().map(rollout).collect();
    assert!(
        !again.is_empty() && again.iter().all(|t| t.iteration == 2 && t.policy_version == 1),
        "{again:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn under_slurm_a_lost_learner_stops_the_run_for_a_requeue_at_most_max_restarts_times() {
    // After a checkpoint: stop now (exit 75), with a record that counts the requeue.
    let mut h = Harness::new(config(1, 1, 3, |c| c.checkpoint.every = 1), "requeue");
    h.st.enable_requeue();
    let (_l, mut r, _ck) = through_the_first_checkpoint(&mut h);
    h.work_through(&mut r);
    h.pass(11_000, &[&r]).await;
    match &h.st.phase {
        Phase::Stopped(why) => assert!(
            why.contains("missed its heartbeats") && why.contains("the job requeues") && why.contains("restart 1 of at most"),
            "{why}"
        ),
        other => panic!("expected a stop for a requeue, got {other:?}"),
    }
    let rec = h.st.records.iter().find(|r| r["requeue"] == serde_json::json!(true)).expect("a requeue record");
    assert_eq!((rec["restart"].as_u64(), rec["checkpoint_iteration"].as_u64()), (Some(1), Some(1)), "{rec}");
    assert!(r.drain().iter().any(|m| matches!(m, Msg::Shutdown(_))), "the rollout worker is told to exit");

    // The run's records already hold run.max_restarts requeues: this loss fails the run.
    let mut h = Harness::new(
        config(1, 1, 3, |c| {
            c.checkpoint.every = 1;
            c.run.max_restarts = 1;
        }),
        "requeue-max",
    );
    h.st.enable_requeue();
    h.st.records.push(serde_json::json!({ "restart": 1, "requeue": true }));
    let (_l, r, _ck) = through_the_first_checkpoint(&mut h);
    h.pass(11_000, &[&r]).await;
    assert!(
        matches!(&h.st.phase, Phase::Failed(why) if why.contains("already requeued for lost learners 1 times (run.max_restarts)")),
        "{:?}",
        h.st.phase
    );

    // Before any checkpoint there is nothing to resume from: the run fails saying so.
    let mut h = Harness::new(config(1, 1, 3, |_| {}), "requeue-none");
    h.st.enable_requeue();
    let mut l = h.join(pb::Role::Learner, 0);
    let r = h.join(pb::Role::Rollout, 0);
    rendezvous(&mut l);
    h.pass(11_000, &[&r]).await;
    assert!(
        matches!(&h.st.phase, Phase::Failed(why) if why.contains("no checkpoint was written yet")),
        "{:?}",
        h.st.phase
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_whose_rollout_workers_are_all_lost_fails_after_the_register_timeout() {
    let mut h = Harness::new(config(1, 1, 2, |c| c.workers.register_timeout_ms = Millis(60_000)), "no-rollouts");
    let mut l = h.join(pb::Role::Learner, 0);
    let r = h.join(pb::Role::Rollout, 0);
    rendezvous(&mut l);
    // Lost after 10 s of silence; the run waits 60 s for another.
    h.pass(11_000, &[&l]).await;
    assert_eq!(h.worker_state(&r), "lost");
    h.pass(50_000, &[&l]).await;
    assert!(!h.st.finished(), "{:?}", h.st.phase);
    h.pass(11_000, &[&l]).await;
    assert!(
        matches!(&h.st.phase, Phase::Failed(why) if why.contains("every rollout worker was lost and none registered within 60 s")),
        "{:?}",
        h.st.phase
    );

    // A replacement that registers in time keeps the run going.
    let mut h = Harness::new(config(1, 1, 2, |c| c.workers.register_timeout_ms = Millis(60_000)), "rollout-back");
    let mut l = h.join(pb::Role::Learner, 0);
    let _r = h.join(pb::Role::Rollout, 0);
    rendezvous(&mut l);
    h.pass(11_000, &[&l]).await;
    let b = h.join(pb::Role::Rollout, 1);
    h.pass(70_000, &[&l, &b]).await;
    assert!(!h.st.finished(), "{:?}", h.st.phase);
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_goes_out_once_its_folder_exists_and_exists_once_its_manifest_is_written() {
    let mut h = Harness::new(config(1, 1, 1, |c| c.checkpoint.every = 1), "effects");
    let mut l = h.join(pb::Role::Learner, 0);
    let mut r = h.join(pb::Role::Rollout, 0);
    rendezvous(&mut l);
    h.work_through(&mut r);
    let it1 = learner_task(l.next().unwrap());
    // The state decides; nothing is on disk until the executor runs what it decided.
    h.hold = true;
    h.report(&l, it1.task_id, serde_json::json!({ "disc_loss": 0.5 }));
    assert!(
        matches!(
            h.held.as_slice(),
            [Effect::Record { tensorboard: true, .. }, Effect::PrepareCheckpoint { iteration: 1, .. }]
        ),
        "{:?}",
        h.held
    );
    assert!(!h._dir.join("metrics.jsonl").exists(), "the record is not appended by the state");
    assert!(l.next().is_none(), "no checkpoint task before its folder is made");
    h.release();
    assert_eq!(std::fs::read_to_string(h._dir.join("metrics.jsonl")).unwrap().lines().count(), 1);
    let ck = learner_task(l.next().expect("the checkpoint task, once its folder exists"));
    assert!(std::path::Path::new(checkpoint_dir(&ck)).is_dir());
    h.hold = true;
    write_checkpoint(&mut h, &l, &ck);
    assert!(matches!(h.held.as_slice(), [Effect::WriteManifest { .. }]), "{:?}", h.held);
    assert!(
        matches!(&h.st.phase, Phase::Running(Learners::Checkpointing(_))),
        "not done before the manifest is written: {:?}",
        h.st.phase
    );
    assert_eq!(h.status().state, "running (checkpoint)");
    assert!(h.st.last_checkpoint.is_none());
    h.release();
    assert_eq!(h.st.phase, Phase::Done);
    assert_eq!(h.st.last_checkpoint.as_deref(), Some(std::path::Path::new(checkpoint_dir(&ck))));
    assert!(std::path::Path::new(checkpoint_dir(&ck)).join("manifest.json").exists());
    // A manifest answer from an earlier learner attempt is ignored.
    h.handle(Event::ManifestWritten {
        attempt: 7,
        error: Some("late".into()),
    });
    assert_eq!(h.st.phase, Phase::Done);
}
