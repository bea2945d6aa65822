//! Tests of [`super::Reloader`]: startup, watcher polls (under tokio's
//! paused clock) and health in step with what is served.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tonic_health::pb::health_check_response::ServingStatus as Wire;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::server::{HealthReporter, HealthService};

use super::*;
use crate::test_support::write_version;

fn reloader(dir: &Path) -> (Arc<Reloader>, HealthService) {
    let reporter = HealthReporter::new();
    let service = HealthService::from_health_reporter(reporter.clone());
    let store = Arc::new(ModelStore::new(dir));
    (
        Arc::new(Reloader::new(store, TenantHealth::new(reporter))),
        service,
    )
}

async fn health_of(service: &HealthService, tenant: &str) -> Option<i32> {
    service
        .check(tonic::Request::new(HealthCheckRequest {
            service: crate::health::service_name(tenant),
        }))
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

fn served(r: &Reloader, tenant: &str) -> Option<String> {
    r.store().get(tenant).ok().map(|m| m.version().to_string())
}

fn corrupt(dir: &Path, tenant: &str, millis: u64, bytes: &[u8]) {
    fs::create_dir_all(dir.join(tenant)).expect("mkdir");
    fs::write(dir.join(tenant).join(format!("v{millis}.tmodel")), bytes).expect("write");
}

#[tokio::test]
async fn startup_loads_every_tenant_and_reports_health() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = write_version(dir.path(), "en", 1, 1_000);
    write_version(dir.path(), "es", 2, 1_000);
    corrupt(dir.path(), "broken", 1_000, b"not a model");
    let (r, health) = reloader(dir.path());
    let summary = r.load_all(Trigger::Startup).await.expect("load all");
    assert_eq!(
        summary,
        ScanSummary {
            tried: 3,
            loaded: 2,
            unchanged: 0,
            failed: 1
        }
    );
    assert_eq!(served(&r, "en"), Some(v1));
    assert_eq!(health_of(&health, "en").await, Some(Wire::Serving as i32));
    assert_eq!(health_of(&health, "es").await, Some(Wire::Serving as i32));
    assert_eq!(
        health_of(&health, "broken").await,
        Some(Wire::NotServing as i32)
    );
    assert_eq!(health_of(&health, "fr").await, None);
}

#[tokio::test]
async fn polls_load_what_is_new_and_do_not_retry_a_refused_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_version(dir.path(), "en", 1, 1_000);
    let (r, health) = reloader(dir.path());
    r.load_all(Trigger::Startup).await.expect("startup");
    assert_eq!(r.scan().await.expect("idle poll").tried, 0);

    let v2 = write_version(dir.path(), "en", 2, 2_000);
    let loaded = r.scan().await.expect("poll");
    assert_eq!((loaded.tried, loaded.loaded), (1, 1));
    assert_eq!(served(&r, "en"), Some(v2.clone()));

    corrupt(dir.path(), "en", 3_000, b"garbage");
    let refused = r.scan().await.expect("poll");
    assert_eq!((refused.tried, refused.failed), (1, 1));
    assert_eq!(r.scan().await.expect("poll").tried, 0, "not retried");
    assert_eq!(served(&r, "en"), Some(v2.clone()));
    assert_eq!(health_of(&health, "en").await, Some(Wire::Serving as i32));

    // An explicit load always tries, and says why it failed.
    let err = r.load("en").await.expect_err("corrupt");
    assert_eq!(err.grpc_code(), tonic::Code::FailedPrecondition);
    assert!(err.to_string().contains("v3000.tmodel"), "{err}");

    // The file changing (a retrain finished writing it) is noticed.
    corrupt(dir.path(), "en", 3_000, b"different garbage");
    assert_eq!(r.scan().await.expect("poll").tried, 1);

    // Unknown tenants get an error and no health entry.
    let missing = r.load("fr").await.expect_err("no artifacts");
    assert_eq!(missing.grpc_code(), tonic::Code::NotFound);
    assert_eq!(health_of(&health, "fr").await, None);
}

#[tokio::test]
async fn a_tenant_appearing_later_is_picked_up_with_fallback() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (r, health) = reloader(dir.path());
    r.load_all(Trigger::Startup).await.expect("empty dir");
    let v1 = write_version(dir.path(), "es", 1, 1_000);
    corrupt(dir.path(), "es", 2_000, b"truncated");
    let summary = r.scan().await.expect("poll");
    assert_eq!((summary.tried, summary.loaded), (1, 1));
    assert_eq!(served(&r, "es"), Some(v1));
    assert_eq!(health_of(&health, "es").await, Some(Wire::Serving as i32));
    assert_eq!(r.scan().await.expect("poll").tried, 0);
}

#[tokio::test(start_paused = true)]
async fn the_watcher_polls_on_its_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = write_version(dir.path(), "en", 1, 1_000);
    let (r, _health) = reloader(dir.path());
    r.load_all(Trigger::Startup).await.expect("startup");
    let watcher = tokio::spawn(Arc::clone(&r).watch(Duration::from_secs(5)));
    let v2 = write_version(dir.path(), "en", 2, 2_000);

    tokio::time::sleep(Duration::from_millis(4_900)).await;
    assert_eq!(served(&r, "en"), Some(v1), "no poll before the interval");

    // The poll reads files on the blocking pool; paused time does not
    // advance while it runs, so a few short sleeps let it finish.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..100 {
        if served(&r, "en").as_deref() == Some(v2.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(served(&r, "en"), Some(v2));
    watcher.abort();
}
