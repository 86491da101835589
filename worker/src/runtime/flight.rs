//! Arrow Flight between workers: rollout workers `DoPut` trajectory rows to their learner; the
//! learners serve the current policy weights with `DoGet` (ticket `policy:<version>`), as a
//! stream of fp32 buckets of [`WEIGHT_BUCKET`] values in the flat-buffer order of
//! [`crate::train::optim::FlatAdamW`] (trainable parameters sorted by name).
//!
//! Every call passes the same [`Guard`] as the coordinator's gRPC service (protocol version and
//! run token). Received rows are validated ([`trajectory::from_batch`]) and deduplicated by
//! `(task_id, sample_index)`, so a task re-run after a lost worker never counts twice.

use airlift_proto::auth::{Guard, Stamp};
use airlift_proto::trajectory::{self, TrajectoryRow};
use arrow::array::{Float32Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightClient, FlightData, FlightDescriptor, FlightInfo, HandshakeRequest, HandshakeResponse, PollInfo, PutResult,
    SchemaResult, Ticket,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tonic::{Request, Response, Status, Streaming};

/// Values per weight bucket (4 MiB of fp32).
pub const WEIGHT_BUCKET: usize = 1 << 20;

/// Rows received for one task.
#[derive(Default)]
struct TaskRows {
    rows: BTreeMap<u32, TrajectoryRow>,
}

/// What a row pushed to a learner must satisfy beyond its schema, set once the learner knows its
/// run ([`LearnerStore::set_limits`]). Rows that break them are refused at `DoPut` with the row
/// and field named, so that a buggy or hostile peer can neither crash the learner (a token id past
/// the vocabulary, a log-prob count that does not match the tokens, a response longer than
/// anything it could have sampled) nor spoil the model silently (a NaN or infinite log-prob) nor
/// fill its memory (rows for an iteration far ahead).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowLimits {
    /// Token ids must be below this (the policy's vocabulary).
    pub vocab: u32,
    /// `sampling.max_new_tokens`.
    pub max_response_tokens: usize,
    /// The policy's context length.
    pub max_prompt_tokens: usize,
    /// Rows may be at most this many iterations ahead of the one the learner waits for
    /// (`run.max_staleness + 1`).
    pub max_ahead: u64,
}

impl RowLimits {
    /// Why `r` is refused, if it is; `floor` is the iteration the learner waits for now.
    pub fn check(&self, r: &TrajectoryRow, floor: u64) -> Result<(), String> {
        if r.source != "policy" {
            return Err(format!(
                "source `{}`: only `policy` rows come over Flight (a learner makes the expert and corrupted rows itself)",
                r.source
            ));
        }
        if r.response_tokens.is_empty() {
            return Err("response_tokens is empty".into());
        }
        if r.response_tokens.len() > self.max_response_tokens {
            return Err(format!(
                "response_tokens has {} tokens, more than sampling.max_new_tokens = {}",
                r.response_tokens.len(),
                self.max_response_tokens
            ));
        }
        if r.prompt_tokens.is_empty() || r.prompt_tokens.len() > self.max_prompt_tokens {
            return Err(format!(
                "prompt_tokens has {} tokens (expected 1..={})",
                r.prompt_tokens.len(),
                self.max_prompt_tokens
            ));
        }
        if r.behaviour_logprobs.len() != r.response_tokens.len() {
            return Err(format!(
                "behaviour_logprobs has {} values for {} response tokens",
                r.behaviour_logprobs.len(),
                r.response_tokens.len()
            ));
        }
        for (field, toks) in [("prompt_tokens", &r.prompt_tokens), ("response_tokens", &r.response_tokens)] {
            if let Some((i, t)) = toks.iter().enumerate().find(|(_, &t)| t >= self.vocab) {
                return Err(format!("{field}[{i}] = {t} is outside the vocabulary (expected < {})", self.vocab));
            }
        }
        // A log-prob is finite and at most 0 (a little above, by rounding).
        if let Some((i, v)) = r.behaviour_logprobs.iter().enumerate().find(|(_, v)| !v.is_finite() || **v > 1e-3) {
            return Err(format!("behaviour_logprobs[{i}] = {v} (expected a finite log-probability <= 0)"));
        }
        // Rows of iterations already past are dropped as stale by the next `take`; rows too far
        // ahead would be held without bound.
        if r.iteration == 0 || r.iteration > floor + self.max_ahead {
            return Err(format!(
                "iteration {} (this learner takes iterations 1..={})",
                r.iteration,
                floor + self.max_ahead
            ));
        }
        Ok(())
    }
}

/// What a learner's Flight server shares with its training loop.
#[derive(Default)]
pub struct LearnerStore {
    /// Row checks; `None` until the learner has loaded its run's config (rows are refused).
    limits: Mutex<Option<RowLimits>>,
    /// The iteration the learner waits for (the lowest it can still use).
    floor: Mutex<u64>,
    inbox: Mutex<HashMap<u64, TaskRows>>,
    arrived: Condvar,
    duplicates: Mutex<u64>,
    stale: Mutex<u64>,
    /// Rows of batches refused by [`LearnerStore::check`].
    refused: Mutex<u64>,
    weights: Mutex<Option<(u64, Arc<Vec<f32>>)>>,
}

impl LearnerStore {
    /// Sets the checks every pushed row must pass (until then a push waits, and
    /// [`LearnerStore::check`] refuses rows).
    pub fn set_limits(&self, limits: RowLimits) {
        *self.limits.lock().unwrap() = Some(limits);
    }

    /// Whether rows are taken yet ([`LearnerStore::set_limits`] has been called).
    pub fn takes_rows(&self) -> bool {
        self.limits.lock().unwrap().is_some()
    }

    /// Raises the iteration the learner waits for (a resumed learner: the checkpoint's next).
    pub fn raise_floor(&self, iteration: u64) {
        let mut floor = self.floor.lock().unwrap();
        *floor = (*floor).max(iteration);
    }

    /// Checks rows as [`RowLimits::check`] does; the error names the first bad row.
    pub fn check(&self, rows: &[TrajectoryRow]) -> Result<(), String> {
        let limits = (*self.limits.lock().unwrap()).ok_or("this learner is not ready for rows yet (it has not loaded its run)")?;
        // Iterations count from 1 (an evaluation's rows carry 1 too).
        let floor = (*self.floor.lock().unwrap()).max(1);
        for r in rows {
            if let Err(why) = limits.check(r, floor) {
                *self.refused.lock().unwrap() += rows.len() as u64;
                return Err(format!("row (task {}, sample {}, iteration {}): {why}", r.task_id, r.sample_index, r.iteration));
            }
        }
        Ok(())
    }

    /// Rows refused so far (every row of each refused batch).
    pub fn refused(&self) -> u64 {
        *self.refused.lock().unwrap()
    }

    /// Adds rows, dropping duplicates; returns how many were new.
    pub fn insert(&self, rows: Vec<TrajectoryRow>) -> usize {
        let mut inbox = self.inbox.lock().unwrap();
        let mut new = 0;
        let mut dup = 0;
        for r in rows {
            let entry = inbox.entry(r.task_id).or_default();
            if let std::collections::btree_map::Entry::Vacant(v) = entry.rows.entry(r.sample_index) {
                v.insert(r);
                new += 1;
            } else {
                dup += 1;
            }
        }
        *self.duplicates.lock().unwrap() += dup;
        self.arrived.notify_all();
        new
    }

    /// Rows dropped as duplicates so far.
    pub fn duplicates(&self) -> u64 {
        *self.duplicates.lock().unwrap()
    }

    /// Waits until the tasks `tasks` together have `total` rows, then removes and returns them
    /// (task order, then sample index). `None` on timeout. Rows of other tasks from iterations
    /// before `iteration` can never be used any more: they are dropped and counted in
    /// [`LearnerStore::stale`].
    pub fn take(&self, iteration: u64, tasks: &[u64], total: usize, timeout: Duration) -> Option<Vec<TrajectoryRow>> {
        let deadline = std::time::Instant::now() + timeout;
        {
            let mut floor = self.floor.lock().unwrap();
            *floor = (*floor).max(iteration);
        }
        let mut inbox = self.inbox.lock().unwrap();
        loop {
            let ready = tasks.iter().map(|t| inbox.get(t).map_or(0, |r| r.rows.len())).sum::<usize>() >= total;
            if ready {
                let rows = tasks
                    .iter()
                    .flat_map(|t| inbox.remove(t).map(|r| r.rows.into_values().collect::<Vec<_>>()).unwrap_or_default())
                    .collect();
                let before = inbox.values().map(|r| r.rows.len()).sum::<usize>();
                inbox.retain(|_, r| r.rows.values().any(|row| row.iteration >= iteration));
                let dropped = before - inbox.values().map(|r| r.rows.len()).sum::<usize>();
                if dropped > 0 {
                    tracing::warn!(dropped, iteration, "dropped rows of earlier iterations' tasks that no learner task asked for");
                    *self.stale.lock().unwrap() += dropped as u64;
                }
                return Some(rows);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return None;
            }
            inbox = self.arrived.wait_timeout(inbox, deadline - now).unwrap().0;
        }
    }

    /// Rows dropped because their task belonged to an earlier iteration and was never asked for.
    pub fn stale(&self) -> u64 {
        *self.stale.lock().unwrap()
    }

    /// Publishes the flat policy weights of `version`.
    pub fn publish(&self, version: u64, flat: Vec<f32>) {
        *self.weights.lock().unwrap() = Some((version, Arc::new(flat)));
    }
}

/// The learner's Flight service.
pub struct LearnerFlight {
    store: Arc<LearnerStore>,
}

impl LearnerFlight {
    /// A server for `store`, guarded by `guard`.
    pub fn server(store: Arc<LearnerStore>, guard: Guard) -> tonic::service::interceptor::InterceptedService<FlightServiceServer<Self>, Guard> {
        let svc = FlightServiceServer::new(LearnerFlight { store })
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        tonic::service::interceptor::InterceptedService::new(svc, guard)
    }
}

/// Checks what arrow's IPC decoder takes on trust in a record or dictionary batch message (it
/// slices the body by the header's buffer offsets and panics when one points past the end):
/// the header is a valid flatbuffer, every buffer lies inside the body, node counts are sane.
/// The bad-input suite (worker/tests/bad_input.rs) found the panics this prevents.
pub fn check_ipc(d: &FlightData) -> Result<(), String> {
    use arrow::ipc;
    if d.data_header.is_empty() {
        return Ok(()); // app_metadata only; the decoder skips it
    }
    let msg = ipc::root_as_message(&d.data_header).map_err(|e| format!("header: {e}"))?;
    let batch = match msg.header_type() {
        ipc::MessageHeader::RecordBatch => msg.header_as_record_batch(),
        ipc::MessageHeader::DictionaryBatch => msg.header_as_dictionary_batch().and_then(|b| b.data()),
        _ => return Ok(()),
    };
    let Some(batch) = batch else {
        return Err("a batch message without its batch".into());
    };
    let body = d.data_body.len() as i64;
    if msg.bodyLength() < 0 || msg.bodyLength() > body {
        return Err(format!("bodyLength {} but the body has {body} bytes", msg.bodyLength()));
    }
    if batch.length() < 0 || batch.length() > i32::MAX as i64 {
        return Err(format!("row count {}", batch.length()));
    }
    for (i, b) in batch.buffers().into_iter().flatten().enumerate() {
        if b.offset() < 0 || b.length() < 0 || b.offset().checked_add(b.length()).is_none_or(|end| end > body) {
            return Err(format!("buffer {i} at {}+{} outside the {body}-byte body", b.offset(), b.length()));
        }
    }
    for (i, n) in batch.nodes().into_iter().flatten().enumerate() {
        if n.length() < 0 || n.length() > i32::MAX as i64 || n.null_count() < 0 || n.null_count() > n.length() {
            return Err(format!("field node {i}: length {} null count {}", n.length(), n.null_count()));
        }
    }
    Ok(())
}

/// How long a weights request waits for its version to be published.
const WEIGHTS_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

fn weights_schema(version: u64, numel: usize) -> Arc<Schema> {
    let mut meta = std::collections::HashMap::new();
    meta.insert("policy_version".to_string(), version.to_string());
    meta.insert("numel".to_string(), numel.to_string());
    Arc::new(Schema::new(vec![Field::new("values", DataType::Float32, false)]).with_metadata(meta))
}

#[tonic::async_trait]
impl FlightService for LearnerFlight {
    type HandshakeStream = BoxStream<'static, Result<HandshakeResponse, Status>>;
    type ListFlightsStream = BoxStream<'static, Result<FlightInfo, Status>>;
    type DoGetStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoPutStream = BoxStream<'static, Result<PutResult, Status>>;
    type DoActionStream = BoxStream<'static, Result<arrow_flight::Result, Status>>;
    type ListActionsStream = BoxStream<'static, Result<ActionType, Status>>;
    type DoExchangeStream = BoxStream<'static, Result<FlightData, Status>>;

    async fn do_put(&self, request: Request<Streaming<FlightData>>) -> Result<Response<Self::DoPutStream>, Status> {
        let stream = request.into_inner().map_err(FlightError::from).and_then(|d| async move {
            check_ipc(&d).map_err(|e| FlightError::DecodeError(format!("malformed Arrow IPC message: {e}")))?;
            Ok(d)
        });
        // A learner takes rows once it has loaded its run and any checkpoint (`set_limits`); a
        // push that comes earlier (a restarted learner, rollout workers that kept the weights)
        // waits for that, as a weights request waits for its version.
        let deadline = tokio::time::Instant::now() + WEIGHTS_WAIT;
        while !self.store.takes_rows() {
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unavailable(format!(
                    "this learner did not load its run within {} s (rows are taken once it has)",
                    WEIGHTS_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let mut batches = FlightRecordBatchStream::new_from_flight_data(stream);
        let mut accepted = 0usize;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(|e| Status::invalid_argument(format!("trajectory stream: {e}")))?;
            let rows = trajectory::from_batch(&batch).map_err(|e| Status::invalid_argument(e.to_string()))?;
            self.store.check(&rows).map_err(|e| {
                tracing::warn!(error = %e, "refused trajectory rows");
                Status::invalid_argument(e)
            })?;
            accepted += self.store.insert(rows);
        }
        let ack = PutResult {
            app_metadata: accepted.to_string().into_bytes().into(),
        };
        Ok(Response::new(futures::stream::once(async { Ok(ack) }).boxed()))
    }

    async fn do_get(&self, request: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        let ticket = String::from_utf8_lossy(&request.get_ref().ticket).to_string();
        let want: u64 = ticket
            .strip_prefix("policy:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Status::invalid_argument(format!("unknown ticket `{ticket}` (expected `policy:<version>`)")))?;
        // A rollout task may ask for a version this learner is about to publish (it is still
        // loading a checkpoint, or finishing the step): wait for it rather than fail the task.
        let deadline = tokio::time::Instant::now() + WEIGHTS_WAIT;
        let (version, flat) = loop {
            let current = self.store.weights.lock().unwrap().clone();
            match current {
                Some((v, flat)) if v >= want => break (v, flat),
                _ if tokio::time::Instant::now() >= deadline => {
                    let have = current.map_or("none".to_string(), |(v, _)| format!("version {v}"));
                    return Err(Status::unavailable(format!(
                        "policy version {want} was not published within {} s (this learner has {have})",
                        WEIGHTS_WAIT.as_secs()
                    )));
                }
                _ => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
            }
        };
        if version != want {
            return Err(Status::failed_precondition(format!("this learner serves policy version {version}, not {want}")));
        }
        let schema = weights_schema(version, flat.len());
        let n = flat.len();
        let batches = (0..n.div_ceil(WEIGHT_BUCKET)).map(move |b| {
            let lo = b * WEIGHT_BUCKET;
            let hi = (lo + WEIGHT_BUCKET).min(n);
            let arr = Float32Array::from(flat[lo..hi].to_vec());
            RecordBatch::try_new(weights_schema(version, n), vec![Arc::new(arr)]).map_err(FlightError::from)
        });
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::iter(batches))
            .map_err(|e| Status::internal(e.to_string()));
        Ok(Response::new(stream.boxed()))
    }

    async fn handshake(&self, _: Request<Streaming<HandshakeRequest>>) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented("handshake: authentication is by metadata on every call"))
    }
    async fn list_flights(&self, _: Request<Criteria>) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("list_flights"))
    }
    async fn get_flight_info(&self, _: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("get_flight_info"))
    }
    async fn poll_flight_info(&self, _: Request<FlightDescriptor>) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("poll_flight_info"))
    }
    async fn get_schema(&self, _: Request<FlightDescriptor>) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented("get_schema"))
    }
    async fn do_action(&self, _: Request<Action>) -> Result<Response<Self::DoActionStream>, Status> {
        Err(Status::unimplemented("do_action"))
    }
    async fn list_actions(&self, _: Request<Empty>) -> Result<Response<Self::ListActionsStream>, Status> {
        Err(Status::unimplemented("list_actions"))
    }
    async fn do_exchange(&self, _: Request<Streaming<FlightData>>) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("do_exchange"))
    }
}

/// A Flight client to `addr` (host:port) that stamps every call.
pub async fn client(addr: &str, stamp: &Stamp) -> Result<FlightClient, FlightError> {
    let channel = airlift_proto::tls::endpoint(&format!("http://{addr}"))
        .map_err(|e| FlightError::ExternalError(e.into()))?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| FlightError::ExternalError(Box::new(e)))?;
    let inner = arrow_flight::flight_service_client::FlightServiceClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20);
    let mut c = FlightClient::new_from_inner(inner);
    stamp.apply(c.metadata_mut());
    Ok(c)
}

/// Flight clients by address, so that repeated calls reuse one HTTP/2 connection. A client
/// whose call fails is dropped, and the next call reconnects.
pub struct Clients {
    stamp: Stamp,
    by_addr: HashMap<String, FlightClient>,
}

impl Clients {
    /// An empty pool whose clients stamp every call with `stamp`.
    pub fn new(stamp: Stamp) -> Self {
        Clients {
            stamp,
            by_addr: HashMap::new(),
        }
    }

    async fn get(&mut self, addr: &str) -> Result<&mut FlightClient, FlightError> {
        if !self.by_addr.contains_key(addr) {
            let c = client(addr, &self.stamp).await?;
            self.by_addr.insert(addr.to_string(), c);
        }
        Ok(self.by_addr.get_mut(addr).expect("just inserted"))
    }

    /// Sends rows to a learner; returns how many it accepted as new.
    pub async fn put_rows(&mut self, addr: &str, rows: &[TrajectoryRow]) -> Result<usize, FlightError> {
        let r = put_rows_on(self.get(addr).await?, rows).await;
        if r.is_err() {
            self.by_addr.remove(addr);
        }
        r
    }

    /// Fetches the flat policy weights of `version` from a learner.
    pub async fn get_weights(&mut self, addr: &str, version: u64) -> Result<Vec<f32>, FlightError> {
        let r = get_weights_on(self.get(addr).await?, version).await;
        if r.is_err() {
            self.by_addr.remove(addr);
        }
        r
    }
}

async fn put_rows_on(c: &mut FlightClient, rows: &[TrajectoryRow]) -> Result<usize, FlightError> {
    let batch = trajectory::to_batch(rows);
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(FlightDescriptor::new_path(vec!["trajectories".into()])))
        .build(futures::stream::iter([Ok(batch)]));
    let results: Vec<PutResult> = c.do_put(data).await?.try_collect().await?;
    Ok(results
        .iter()
        .filter_map(|r| std::str::from_utf8(&r.app_metadata).ok()?.parse::<usize>().ok())
        .sum())
}

async fn get_weights_on(c: &mut FlightClient, version: u64) -> Result<Vec<f32>, FlightError> {
    let mut stream = c.do_get(Ticket::new(format!("policy:{version}"))).await?;
    let mut out = Vec::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let col = batch
            .column(0)
            .as_any()
            .downcast_ref::<Float32Array>()
            .ok_or_else(|| FlightError::protocol("weight bucket is not a Float32 column"))?;
        out.extend_from_slice(col.values());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(iteration: u64, task_id: u64, sample_index: u32) -> TrajectoryRow {
        TrajectoryRow {
            iteration,
            policy_version: 0,
            task_id,
            prompt_id: 1,
            sample_index,
            prompt_tokens: vec![1],
            response_tokens: vec![2],
            behaviour_logprobs: vec![-0.5],
            finish_reason: "stop".into(),
            response_text: String::new(),
            predicted_answer: None,
            correct: None,
            generation_ms: 0,
            source: "policy".into(),
            first_error_token: None,
        }
    }

    #[test]
    fn rows_that_would_crash_or_spoil_a_learner_are_refused_by_name() {
        let s = LearnerStore::default();
        assert!(s.check(&[row(1, 5, 0)]).unwrap_err().contains("not ready"));
        s.set_limits(RowLimits {
            vocab: 100,
            max_response_tokens: 4,
            max_prompt_tokens: 8,
            max_ahead: 1,
        });
        assert_eq!(s.check(&[row(1, 5, 0), row(2, 5, 1)]), Ok(()));
        let bad = |f: fn(&mut TrajectoryRow), want: &str| {
            let mut r = row(1, 5, 3);
            f(&mut r);
            let e = s.check(&[row(1, 5, 0), r]).unwrap_err();
            assert!(e.contains("task 5, sample 3") && e.contains(want), "{e}");
        };
        bad(|r| r.behaviour_logprobs[0] = f32::NAN, "behaviour_logprobs[0] = NaN");
        bad(|r| r.behaviour_logprobs[0] = f32::NEG_INFINITY, "behaviour_logprobs[0] = -inf");
        bad(|r| r.behaviour_logprobs[0] = 0.5, "log-probability <= 0");
        bad(
            |r| r.response_tokens[0] = 4_000_000_000,
            "response_tokens[0] = 4000000000 is outside the vocabulary",
        );
        bad(|r| r.prompt_tokens[0] = 100, "prompt_tokens[0] = 100");
        bad(|r| r.behaviour_logprobs = vec![-0.1; 3], "3 values for 1 response tokens");
        bad(|r| (r.response_tokens, r.behaviour_logprobs) = (vec![], vec![]), "response_tokens is empty");
        bad(
            |r| (r.response_tokens, r.behaviour_logprobs) = (vec![1; 5], vec![-0.1; 5]),
            "more than sampling.max_new_tokens = 4",
        );
        bad(|r| r.prompt_tokens = vec![1; 9], "prompt_tokens has 9 tokens");
        bad(|r| r.source = "expert".into(), "source `expert`");
        bad(|r| r.iteration = 1 << 63, "this learner takes iterations 1..=2");
        bad(|r| r.iteration = 0, "iteration 0");
        assert_eq!(s.refused(), 2 * 12, "every row of each refused batch is counted");
        // Once the learner waits for iteration 3 (or resumed after 2), iteration 4 is in reach,
        // 5 is not; iteration 2's rows pass the check (the next take drops them as stale).
        assert!(s.check(&[row(4, 6, 0)]).is_err());
        s.raise_floor(3);
        assert_eq!(s.check(&[row(4, 6, 0)]), Ok(()));
        assert!(s.check(&[row(5, 6, 0)]).unwrap_err().contains("iterations 1..=4"));
        assert!(s.take(3, &[], 0, Duration::from_millis(1)).is_some());
        assert_eq!(s.check(&[row(2, 6, 0)]), Ok(()));
    }

    /// A store with small limits: vocabulary 100, 4 response and 8 prompt tokens, 1 iteration ahead.
    fn limited_store() -> Arc<LearnerStore> {
        let store = Arc::new(LearnerStore::default());
        store.set_limits(RowLimits {
            vocab: 100,
            max_response_tokens: 4,
            max_prompt_tokens: 8,
            max_ahead: 1,
        });
        store
    }

    /// Serves `store` on a local port with the token `t`; returns its address.
    async fn serve(store: &Arc<LearnerStore>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let svc = LearnerFlight::server(store.clone(), Guard::new(Some("t".into())));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    /// Over the wire: a learner's Flight server refuses a batch holding a NaN log-prob with the
    /// row and field in the error, stores nothing of it, and takes the good batch after it.
    #[test]
    fn a_flight_put_with_a_nan_log_prob_is_refused_and_nothing_of_it_kept() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = limited_store();
            let addr = serve(&store).await;
            let mut clients = Clients::new(Stamp::new(Some("t".into())));
            let mut nan = row(1, 7, 1);
            nan.behaviour_logprobs[0] = f32::NAN;
            let e = clients.put_rows(&addr, &[row(1, 7, 0), nan]).await.unwrap_err().to_string();
            assert!(e.contains("task 7, sample 1") && e.contains("behaviour_logprobs[0] = NaN"), "{e}");
            assert_eq!(
                clients.put_rows(&addr, &[row(1, 7, 0), row(1, 7, 1)]).await.unwrap(),
                2,
                "the refused batch left nothing behind"
            );
        });
    }

    /// Over the wire: rows pushed before the learner has loaded its run (a learner restarted from
    /// a checkpoint, rollout workers that kept the weights) wait for it, then pass the checks
    /// with the checkpoint's floor, instead of failing the rollout task (`make test` saw a
    /// restart fail so under load, 2026-12-08).
    #[test]
    fn rows_pushed_before_the_learner_has_loaded_its_run_wait_for_it() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = Arc::new(LearnerStore::default());
            assert!(!store.takes_rows());
            let addr = serve(&store).await;
            // Iteration 3's rows, for a learner that resumes after iteration 2: before the resume
            // its floor (1) puts them out of reach; the push must wait for the resume.
            let push = tokio::spawn({
                let addr = addr.clone();
                async move { Clients::new(Stamp::new(Some("t".into()))).put_rows(&addr, &[row(3, 7, 0)]).await }
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(!push.is_finished(), "the push did not wait for the learner");
            store.raise_floor(3);
            store.set_limits(RowLimits {
                vocab: 100,
                max_response_tokens: 4,
                max_prompt_tokens: 8,
                max_ahead: 1,
            });
            assert_eq!(push.await.unwrap().unwrap(), 1);
            assert_eq!(store.refused(), 0);
            let rows = store.take(3, &[7], 1, Duration::from_millis(1)).expect("the row is stored");
            assert_eq!((rows.len(), rows[0].iteration), (1, 3));
        });
    }

    /// Over the wire, on the bounded server the learner runs: rows pushed or weights pulled
    /// with another run's token (or none) are refused naming the token, and nothing is stored.
    #[test]
    fn flight_refuses_a_wrong_token_end_to_end() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = limited_store();
            store.publish(1, vec![0.5; 8]);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            let svc = LearnerFlight::server(store.clone(), Guard::new(Some("right".into())));
            tokio::spawn(
                airlift_proto::conn::server()
                    .add_service(svc)
                    .serve_with_incoming(airlift_proto::conn::incoming(listener, 64)),
            );
            for stamp in [Stamp::new(Some("wrong".into())), Stamp::new(None)] {
                let mut clients = Clients::new(stamp);
                let e = clients.put_rows(&addr, &[row(1, 7, 0)]).await.unwrap_err().to_string();
                assert!(e.contains("token"), "{e}");
                let e = clients.get_weights(&addr, 1).await.unwrap_err().to_string();
                assert!(e.contains("token"), "{e}");
            }
            let mut clients = Clients::new(Stamp::new(Some("right".into())));
            assert_eq!(
                clients.put_rows(&addr, &[row(1, 7, 0)]).await.unwrap(),
                1,
                "nothing of the refused pushes was kept"
            );
            assert_eq!(clients.get_weights(&addr, 1).await.unwrap(), vec![0.5; 8]);
        });
    }

    #[test]
    fn store_drops_duplicates_and_stale_tasks_and_keeps_later_ones() {
        let s = LearnerStore::default();
        // Iteration 2's task 5 (sent twice), a stray task 3 from iteration 1, and task 9 of
        // iteration 3 that arrived early (bounded staleness).
        assert_eq!(s.insert(vec![row(2, 5, 0), row(2, 5, 1)]), 2);
        assert_eq!(s.insert(vec![row(2, 5, 1), row(1, 3, 0), row(3, 9, 0)]), 2);
        assert_eq!(s.duplicates(), 1);
        let got = s.take(2, &[5], 2, Duration::from_millis(10)).expect("rows are there");
        assert_eq!(got.iter().map(|r| (r.task_id, r.sample_index)).collect::<Vec<_>>(), [(5, 0), (5, 1)]);
        assert_eq!(s.stale(), 1, "task 3 of iteration 1 can no longer be asked for");
        assert!(s.take(3, &[9], 1, Duration::from_millis(10)).is_some(), "iteration 3's early rows are kept");
        assert!(s.take(4, &[11], 1, Duration::from_millis(10)).is_none(), "times out without rows");
    }
}
