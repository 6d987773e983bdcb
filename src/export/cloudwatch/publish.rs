//! Publishing in the background: a flusher closes each period on the wall-clock boundary and
//! queues its datums (or writes its EMF lines); a sender drains the queue through
//! `PutMetricData`, retrying throttling, 5xx and network failures with backoff and jitter.
//! Probing never waits on any of it: recording a round only touches an in-memory period.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatch::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatch::operation::put_metric_data::PutMetricDataError;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::buffer::Buffer;
use super::datum::MAX_DATUMS;
use super::datum::{Datum, Unit, Value};
use super::encode::{admissible, datums};
use super::period::{Period, Periods};
use crate::config::{CloudWatch, CloudWatchMode, EmfOutput};
use crate::record::Observation;

use super::stats::Stats;

/// How long one `PutMetricData` call may take before it counts as failed and is retried.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// First retry delay; it doubles per failure up to the flush interval (at most 30 s).
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// The CloudWatch side of a running agent.
pub struct Publisher {
    periods: Arc<Mutex<Periods>>,
    finish: watch::Sender<Option<Instant>>,
    tasks: Vec<JoinHandle<()>>,
}

/// The recorder's handle on the open periods.
#[derive(Clone)]
pub struct Feed(Arc<Mutex<Periods>>);

impl Feed {
    /// Adds a recorded round to its period. Cheap: a lock and a few counters.
    pub fn observe(&self, observation: &Observation) {
        // A poisoned lock means a panic elsewhere; the counts are still sound.
        let mut periods = self.0.lock().unwrap_or_else(|e| e.into_inner());
        periods.observe(observation);
    }
}

impl crate::export::Sink for Feed {
    fn observe(&self, observation: &Observation) {
        Feed::observe(self, observation);
    }
}

/// Where a period goes.
enum Outlet {
    Api(Arc<Queue>),
    Emf(EmfOutput),
}

/// The datums waiting for the sender, and how to wake it.
struct Queue {
    buffer: Mutex<Buffer>,
    wake: Notify,
    /// Set by the flusher once its last period is queued: then an empty buffer means done.
    closed: AtomicBool,
    /// Datums taken out for the call in progress: still waiting, so part of the gauge.
    in_flight: AtomicUsize,
}

impl Queue {
    /// The buffer; a poisoned lock means a panic elsewhere, and the datums are still sound.
    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes `hopwatch_cloudwatch_buffered_datums`: queued plus in the call in progress.
    fn report(&self, buffer: &Buffer, metrics: &Stats) {
        metrics.buffered(buffer.len() + self.in_flight.load(Ordering::Relaxed));
    }

    /// Puts a batch whose call failed back in front, counting what newer data pushed out.
    fn restore(&self, batch: Vec<Datum>, metrics: &Stats) {
        let mut buffer = self.lock();
        let dropped = buffer.restore(batch);
        self.in_flight.store(0, Ordering::Relaxed);
        self.report(&buffer, metrics);
        metrics.dropped(dropped);
    }
}

/// The SDK client and what each call needs.
struct Api {
    client: aws_sdk_cloudwatch::Client,
    namespace: String,
}

impl Publisher {
    /// Starts publishing as `config` says. In API mode this builds the SDK client from the
    /// default chain (env, profile, ECS task role, IMDS); nothing is sent until a period ends.
    pub async fn start(config: CloudWatch, metrics: Arc<Stats>) -> Publisher {
        let periods = Arc::new(Mutex::new(Periods::new(config.flush_interval)));
        let (finish, finish_rx) = watch::channel(None);
        let mut tasks = Vec::new();
        let outlet = match config.mode {
            CloudWatchMode::Api => {
                let queue = Arc::new(Queue {
                    buffer: Mutex::new(Buffer::new(config.max_buffered_datums)),
                    wake: Notify::new(),
                    closed: AtomicBool::new(false),
                    in_flight: AtomicUsize::new(0),
                });
                let api = Api {
                    client: client(&config).await,
                    namespace: config.namespace.clone(),
                };
                let cap = config
                    .flush_interval
                    .clamp(Duration::from_secs(1), Duration::from_secs(30));
                tasks.push(tokio::spawn(send_loop(
                    api,
                    queue.clone(),
                    metrics.clone(),
                    cap,
                    finish_rx.clone(),
                )));
                Outlet::Api(queue)
            }
            CloudWatchMode::Emf => Outlet::Emf(config.emf_output.clone()),
        };
        tasks.insert(
            0,
            tokio::spawn(flush_loop(
                config,
                periods.clone(),
                outlet,
                metrics,
                finish_rx,
            )),
        );
        Publisher {
            periods,
            finish,
            tasks,
        }
    }

    /// What the recorder adds rounds through.
    pub fn feed(&self) -> Feed {
        Feed(self.periods.clone())
    }

    /// Flushes everything held, the open period included, and tries to send it all within
    /// `deadline`; what could not be sent by then is counted as dropped and logged.
    pub async fn finish(self, deadline: Duration) {
        let _ = self.finish.send(Some(Instant::now() + deadline));
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// The SDK client. Retries are ours (counted, with the buffer behind them), so the SDK's are off.
async fn client(config: &CloudWatch) -> aws_sdk_cloudwatch::Client {
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    let sdk = crate::aws::loader(config.region.as_deref(), config.endpoint_url.as_deref())
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(CALL_TIMEOUT)
                .build(),
        )
        .load()
        .await;
    if sdk.region().is_none() {
        // Every call would fail; say why once, loudly, instead of retrying in silence.
        tracing::error!("no AWS region for CloudWatch: set [cloudwatch] region or AWS_REGION; datums are buffered until then");
    }
    aws_sdk_cloudwatch::Client::new(&sdk)
}

/// Sleeps until the next multiple of `every` since the epoch (plus a few milliseconds, so the
/// period has surely ended by the wall clock).
fn until_boundary(every: Duration) -> Duration {
    let every_ms = (every.as_millis() as u64).max(1);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Duration::from_millis(every_ms - now_ms % every_ms + 5)
}

async fn flush_loop(
    config: CloudWatch,
    periods: Arc<Mutex<Periods>>,
    outlet: Outlet,
    metrics: Arc<Stats>,
    mut finish: watch::Receiver<Option<Instant>>,
) {
    loop {
        let last = tokio::select! {
            _ = tokio::time::sleep(until_boundary(config.flush_interval)) => false,
            _ = finish.wait_for(Option::is_some) => true,
        };
        let ended = {
            let mut p = periods.lock().unwrap_or_else(|e| e.into_inner());
            if last {
                p.take_all()
            } else {
                p.take_ended(SystemTime::now())
            }
        };
        for period in &ended {
            emit(&config, period, &outlet, &metrics).await;
        }
        if last {
            if let Outlet::Api(queue) = &outlet {
                queue.closed.store(true, Ordering::Release);
                queue.wake.notify_one();
            }
            return;
        }
    }
}

/// Hands one period to the outlet: datums to the queue, or EMF lines to their output.
async fn emit(config: &CloudWatch, period: &Period, outlet: &Outlet, metrics: &Stats) {
    let all = datums(
        period,
        &config.dimensions,
        config.storage_resolution,
        config.detail,
    );
    match outlet {
        Outlet::Api(queue) => {
            let (ok, rejected) = admissible(all, SystemTime::now());
            for (datum, why) in &rejected {
                tracing::error!(metric = %datum.metric, ?why, "datum CloudWatch would refuse; dropped");
            }
            metrics.dropped(rejected.len());
            let n = ok.len();
            let dropped = {
                let mut buffer = queue.lock();
                let dropped = buffer.push(ok);
                queue.report(&buffer, metrics);
                dropped
            };
            if dropped > 0 {
                metrics.dropped(dropped);
                tracing::warn!(
                    dropped,
                    capacity = config.max_buffered_datums,
                    "CloudWatch buffer full: dropped the oldest datums"
                );
            }
            if n > 0 {
                queue.wake.notify_one();
            }
        }
        Outlet::Emf(output) => {
            // EMF lines carry the same numbers as these datums; they count what was written.
            let n = all.len();
            let lines = super::emf::lines(
                period,
                &config.namespace,
                &config.dimensions,
                config.storage_resolution,
                config.detail,
            );
            let count = lines.len();
            let output = output.clone();
            // A slow log driver must block a blocking thread, not a runtime worker.
            let written = tokio::task::spawn_blocking(move || write_lines(&output, &lines))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
            match written {
                Ok(()) => {
                    metrics.sent(n);
                    metrics.succeeded();
                }
                Err(e) => {
                    metrics.dropped(n);
                    tracing::error!(error = %e, lines = count, "cannot write EMF lines; dropped");
                }
            }
        }
    }
}

fn write_lines(output: &EmfOutput, lines: &[String]) -> std::io::Result<()> {
    let mut text = String::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    match output {
        // One write under the lock: lines never interleave with other output.
        EmfOutput::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()
        }
        EmfOutput::File(path) => append(path, &text),
    }
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    file.write_all(text.as_bytes())
}

/// What a failed call means for its datums.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// Throttling, 5xx, network, credentials: the datums wait and go again.
    Retry(String),
    /// CloudWatch said the request itself is wrong: sending it again cannot help.
    Reject(String),
}

fn classify(err: &SdkError<PutMetricDataError>) -> Failure {
    match err {
        SdkError::ServiceError(e) => {
            let inner = e.err();
            let code = inner.code().unwrap_or("unknown");
            let text = format!(
                "{code} (HTTP {}): {}",
                e.raw().status().as_u16(),
                inner.message().unwrap_or("")
            );
            match inner {
                PutMetricDataError::InvalidParameterValueException(_)
                | PutMetricDataError::InvalidParameterCombinationException(_)
                | PutMetricDataError::MissingRequiredParameterException(_) => Failure::Reject(text),
                _ => Failure::Retry(text),
            }
        }
        other => Failure::Retry(format!(
            "{}",
            aws_sdk_cloudwatch::error::DisplayErrorContext(other)
        )),
    }
}

fn to_sdk(d: &Datum) -> MetricDatum {
    let dimensions = d
        .dimensions
        .iter()
        .map(|(k, v)| Dimension::builder().name(k).value(v).build())
        .collect();
    let unit = match d.unit {
        Unit::Milliseconds => StandardUnit::Milliseconds,
        Unit::Count => StandardUnit::Count,
        Unit::None => StandardUnit::None,
    };
    let builder = MetricDatum::builder()
        .metric_name(&d.metric)
        .set_dimensions(Some(dimensions))
        .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from(d.timestamp))
        .unit(unit)
        .storage_resolution(i32::from(d.storage_resolution));
    match &d.value {
        Value::Single(v) => builder.value(*v),
        Value::Distribution(dist) => builder
            .set_values(Some(dist.values.clone()))
            .set_counts(Some(dist.counts.clone())),
    }
    .build()
}

/// Delay before retry number `attempt` (1-based): doubling from [`FIRST_BACKOFF`] up to `cap`,
/// then a random point in its upper half, so many agents recovering together spread out.
fn backoff(attempt: u32, cap: Duration) -> Duration {
    let exp = FIRST_BACKOFF.saturating_mul(1u32 << attempt.min(16).saturating_sub(1));
    let top = exp.min(cap);
    top / 2 + top.mul_f64(fastrand::f64() / 2.0)
}

/// Resolves once finishing has begun and its deadline has passed; never otherwise.
async fn deadline_passed(mut finish: watch::Receiver<Option<Instant>>) {
    let at = loop {
        if let Some(at) = *finish.borrow_and_update() {
            break at;
        }
        if finish.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::time::sleep_until(at).await;
}

/// Resolves when the finish signal changes; never if the publisher is gone (the flusher then
/// closes the queue, which ends the sender).
async fn finish_changed(finish: &mut watch::Receiver<Option<Instant>>) {
    if finish.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// While finishing, retries come at least this often, so the last period gets several tries
/// before the deadline whatever the backoff had grown to.
const FINISHING_RETRY: Duration = Duration::from_millis(500);

async fn send_loop(
    api: Api,
    queue: Arc<Queue>,
    metrics: Arc<Stats>,
    cap: Duration,
    mut finish: watch::Receiver<Option<Instant>>,
) {
    let mut failures: u32 = 0;
    // Halved while CloudWatch rejects requests, to isolate the datum it refuses; doubled back
    // after each success.
    let mut batch_limit = MAX_DATUMS;
    loop {
        let batch = {
            let mut buffer = queue.lock();
            let expired = buffer.expire(SystemTime::now());
            if expired > 0 {
                metrics.dropped(expired);
                tracing::warn!(expired, "buffered datums older than two weeks dropped");
            }
            let batch = buffer.take_batch(batch_limit);
            queue.in_flight.store(batch.len(), Ordering::Relaxed);
            batch
        };
        if batch.is_empty() {
            if queue.closed.load(Ordering::Acquire) {
                // The flusher has queued its last period and all of it is sent.
                metrics.buffered(0);
                return;
            }
            // `notify_one` stores a permit, so a wake between the check and here is not lost.
            tokio::select! {
                _ = queue.wake.notified() => {}
                _ = finish_changed(&mut finish) => {}
            }
            continue;
        }
        let n = batch.len();
        let request = api
            .client
            .put_metric_data()
            .namespace(&api.namespace)
            .set_metric_data(Some(batch.iter().map(to_sdk).collect()))
            .send();
        let deadline = deadline_passed(finish.clone());
        let outcome = tokio::select! {
            r = request => r,
            _ = deadline => {
                give_up(&queue, batch, &metrics);
                return;
            }
        };
        let failure = match outcome {
            Ok(_) => {
                queue.in_flight.store(0, Ordering::Relaxed);
                metrics.sent(n);
                metrics.succeeded();
                if failures > 0 {
                    tracing::info!(after = failures, "CloudWatch publishing recovered");
                }
                failures = 0;
                batch_limit = (batch_limit * 2).min(MAX_DATUMS);
                let buffer = queue.lock();
                queue.report(&buffer, &metrics);
                continue;
            }
            Err(err) => classify(&err),
        };
        match failure {
            Failure::Reject(why) if n > 1 => {
                // One bad datum must not take a thousand good ones with it: send halves.
                batch_limit = n / 2;
                tracing::warn!(datums = n, error = %why, "CloudWatch rejected a request; retrying in halves to isolate the datum it refuses");
                queue.restore(batch, &metrics);
            }
            Failure::Reject(why) => {
                queue.in_flight.store(0, Ordering::Relaxed);
                metrics.dropped(n);
                tracing::error!(datums = n, error = %why, "CloudWatch rejected a datum; it is dropped");
            }
            Failure::Retry(why) => {
                metrics.retried(n);
                failures += 1;
                queue.restore(batch, &metrics);
                // Once per outage at warn, then quietly: the metrics carry the rest.
                if failures == 1 {
                    tracing::warn!(datums = n, error = %why, "PutMetricData failed; datums kept and retried");
                } else {
                    tracing::debug!(datums = n, attempt = failures, error = %why, "PutMetricData failed again");
                }
                let mut wait = backoff(failures, cap);
                if finish.borrow().is_some() {
                    wait = wait.min(FINISHING_RETRY);
                }
                let deadline = deadline_passed(finish.clone());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    // Finishing began: stop waiting out a long backoff, try again now.
                    _ = finish_changed(&mut finish) => {}
                    _ = deadline => {
                        give_up(&queue, Vec::new(), &metrics);
                        return;
                    }
                }
            }
        }
    }
}

/// The shutdown deadline passed: whatever is still held is lost, and said so.
fn give_up(queue: &Queue, in_flight: Vec<Datum>, metrics: &Stats) {
    let mut buffer = queue.lock();
    let lost = buffer.len() + in_flight.len();
    buffer.take_all();
    queue.in_flight.store(0, Ordering::Relaxed);
    metrics.dropped(lost);
    metrics.buffered(0);
    if lost > 0 {
        tracing::error!(
            lost,
            "shutdown deadline reached with datums not yet accepted by CloudWatch; they are lost"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_in_the_upper_half() {
        let cap = Duration::from_secs(10);
        for attempt in 1..20 {
            let top = FIRST_BACKOFF
                .saturating_mul(1 << (attempt.min(16) - 1))
                .min(cap);
            for _ in 0..50 {
                let d = backoff(attempt, cap);
                assert!(d >= top / 2 && d <= top, "attempt {attempt}: {d:?}");
            }
        }
        assert!(backoff(30, cap) <= cap);
    }

    #[test]
    fn boundary_is_ahead_and_within_one_period() {
        let every = Duration::from_secs(60);
        let d = until_boundary(every);
        assert!(d > Duration::ZERO && d <= every + Duration::from_millis(5));
    }
}
