//! Writing documents through a router's public `Documents.Write`: what
//! `tandem ingest` does, and how `tandem dev` loads its sample tenants (so
//! the sample data is written once, to the leaders, and replicated).
//!
//! Documents go in batches. Each batch has its own `request_id`, kept
//! across retries, so a batch retried after a timeout is applied once. A
//! batch is retried with backoff on UNAVAILABLE, DEADLINE_EXCEEDED and
//! RESOURCE_EXHAUSTED; any other refusal, or a batch that still fails,
//! stops the run and says from which input line to resume.

use std::time::{Duration, Instant};

use anyhow::Context;
use rand::RngExt;
use tandem_proto::v1::documents_client::DocumentsClient;
use tandem_proto::v1::{Document, WriteRequest};
use tonic::transport::Channel;
use tonic::Code;

/// Attempts per batch.
const ATTEMPTS: u32 = 8;

/// Where and how to write.
#[derive(Clone, Debug)]
pub struct IngestPlan {
    /// Tenant id.
    pub tenant: String,
    /// A key with the write scope.
    pub write_key: String,
    /// Documents per batch.
    pub batch_size: usize,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// Line number of the first document (for "resume from line N").
    pub first_line: usize,
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct IngestReport {
    /// Documents acknowledged.
    pub documents: usize,
    /// Batches acknowledged.
    pub batches: usize,
    /// The last batch's consistency token.
    pub last_token: String,
    /// Wall time.
    pub elapsed: Duration,
}

/// A batch that did not go in, and where to resume.
#[derive(Debug, thiserror::Error)]
#[error(
    "batch starting at line {line} was not written ({code:?}: {message}); \
         {done} documents before it were; resume with --start-line {line}"
)]
pub struct IngestFailed {
    /// Input line of the batch's first document.
    pub line: usize,
    /// The last status code.
    pub code: Code,
    /// Its message.
    pub message: String,
    /// Documents written before it.
    pub done: usize,
}

/// Writes `docs` through `client` in batches.
pub async fn ingest(
    client: &mut DocumentsClient<Channel>,
    plan: &IngestPlan,
    docs: Vec<Document>,
) -> Result<IngestReport, IngestFailed> {
    let started = Instant::now();
    let bar = progress_bar(plan, docs.len());
    let mut report = IngestReport::default();
    let mut line = plan.first_line;
    let mut docs = docs.into_iter().peekable();
    while docs.peek().is_some() {
        let batch: Vec<Document> = docs.by_ref().take(plan.batch_size.max(1)).collect();
        let n = batch.len();
        let request = WriteRequest {
            tenant: plan.tenant.clone(),
            upserts: batch,
            deletes: Vec::new(),
            request_id: request_id(),
        };
        match write_with_retry(client, &plan.write_key, request).await {
            Ok(token) => report.last_token = token,
            Err(status) => {
                if let Some(bar) = &bar {
                    bar.abandon();
                }
                return Err(IngestFailed {
                    line,
                    code: status.code(),
                    message: status.message().to_string(),
                    done: report.documents,
                });
            }
        }
        line += n;
        report.documents += n;
        report.batches += 1;
        if let Some(bar) = &bar {
            bar.inc(n as u64);
        }
    }
    if let Some(bar) = &bar {
        bar.finish();
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

fn progress_bar(plan: &IngestPlan, total: usize) -> Option<indicatif::ProgressBar> {
    if !plan.progress {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total as u64);
    let style = indicatif::ProgressStyle::with_template(
        "{bar:40} {pos}/{len} documents  {per_sec}  ETA {eta}",
    )
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    Some(bar)
}

/// A random request id (128 bits, hex).
fn request_id() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    hex::encode(bytes)
}

async fn write_with_retry(
    client: &mut DocumentsClient<Channel>,
    key: &str,
    request: WriteRequest,
) -> Result<String, tonic::Status> {
    let mut delay = Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut call = tonic::Request::new(request.clone());
        call.set_timeout(Duration::from_secs(30));
        if let Ok(v) = format!("Bearer {key}").parse() {
            call.metadata_mut().insert("authorization", v);
        }
        match client.write(call).await {
            Ok(response) => return Ok(response.into_inner().consistency_token),
            Err(status)
                if attempt < ATTEMPTS
                    && matches!(
                        status.code(),
                        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
                    ) =>
            {
                tracing::debug!(attempt, error = %status.message(), "batch not written; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(3));
            }
            Err(status) => return Err(status),
        }
    }
}

/// `tandem ingest`: reads documents from `file` (`-`: stdin), skipping the
/// lines before `start_line`, and writes them through `router`.
pub async fn ingest_file(
    router: &str,
    plan: &IngestPlan,
    file: &std::path::Path,
) -> anyhow::Result<IngestReport> {
    let (path, skip) = (file.to_path_buf(), plan.first_line.saturating_sub(1));
    let docs = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Document>> {
        let docs = if path.as_os_str() == "-" {
            tandem_client::corpus::documents_from(std::io::stdin().lock(), &[])?
        } else {
            tandem_client::corpus::read_documents(&path, &[])?
        };
        Ok(docs.into_iter().skip(skip).collect())
    })
    .await??;
    let mut client = connect(router).await?;
    let mut plan = plan.clone();
    plan.first_line = plan.first_line.max(1);
    Ok(ingest(&mut client, &plan, docs).await?)
}

/// A `Documents` client for `router` (`HOST:PORT` or a URL).
pub async fn connect(router: &str) -> anyhow::Result<DocumentsClient<Channel>> {
    let addr = crate::operator::uri(router);
    let channel = crate::operator::endpoint(router)?
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    Ok(DocumentsClient::new(channel)
        .max_encoding_message_size(8 << 20)
        .max_decoding_message_size(8 << 20))
}
