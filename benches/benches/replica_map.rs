//! Replica-map resolution for a catalog of 100,000 tenants: how long the
//! catalog takes to parse and validate, how long one tenant's resolution
//! takes through the router's moka cache (cold: resolved from the catalog;
//! warm: a cache hit), p50/p99/max, and what it costs in live heap memory.
//!
//! Run: `cargo bench -p tandem-benches --bench replica_map`

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Instant;

use hdrhistogram::Histogram;
use rand::{RngExt, SeedableRng};
use tandem_router::cache::ReplicaMapCache;
use tandem_router::catalog::Catalog;

const TENANTS: usize = 100_000;

/// Counts live heap bytes, so memory is measured exactly rather than
/// through the resident set size (which keeps freed parser memory).
struct CountingAllocator;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is only bookkeeping.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn heap_bytes() -> u64 {
    LIVE_BYTES.load(Relaxed) as u64
}

fn catalog_text() -> String {
    let mut t = String::with_capacity(TENANTS * 300);
    t += "[[regions]]\nid = \"us-east-1\"\npair = \"us-east-2\"\n\n[[regions]]\nid = \"us-east-2\"\npair = \"us-east-1\"\n\n";
    for region in ["us-east-1", "us-east-2"] {
        for i in 1..=4 {
            t += &format!("[[nodes]]\nid = \"{region}-index-{i}\"\nregion = \"{region}\"\nkind = \"index\"\naddr = \"http://127.0.0.1:{}\"\n\n", 7000 + i);
        }
        t += &format!("[[nodes]]\nid = \"{region}-model-1\"\nregion = \"{region}\"\nkind = \"model\"\naddr = \"http://127.0.0.1:7100\"\n\n");
    }
    for n in 0..TENANTS {
        // A unique, deterministic 64-hex-digit key hash per tenant.
        let hash = format!("{:064x}", (n as u128 + 1) * 0x9e37_79b9_7f4a_7c15);
        let a = n % 4 + 1;
        let b = (n + 1) % 4 + 1;
        t += &format!(
            "[[tenants]]\nid = \"tenant-{n}\"\nhome = \"us-east-1\"\nactive_active = true\nlanguage = \"en\"\n\
             api_key_sha256 = [\"{hash}\"]\nmodel_replicas = [\"us-east-1-model-1\", \"us-east-2-model-1\"]\n\n[tenants.shards]\n\
             0 = [\"us-east-1-index-{a}\", \"us-east-2-index-{a}\"]\n1 = [\"us-east-1-index-{b}\", \"us-east-2-index-{b}\"]\n\n"
        );
    }
    t
}

fn main() {
    let text = catalog_text();
    let rss0 = heap_bytes().saturating_sub(text.capacity() as u64);
    let started = Instant::now();
    let catalog = match Catalog::parse(text.as_bytes()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("catalog refused: {e}");
            std::process::exit(1);
        }
    };
    let parse = started.elapsed();
    let text_bytes = text.capacity() as u64;
    drop(text);
    let rss_catalog = heap_bytes();
    let cache = ReplicaMapCache::new(
        TENANTS as u64,
        std::time::Duration::from_secs(600),
        std::time::Duration::from_secs(5),
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut order: Vec<usize> = (0..TENANTS).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let mut cold = Histogram::<u64>::new(3).expect("histogram");
    for &n in &order {
        let id = format!("tenant-{n}");
        let t = Instant::now();
        let map = cache.get(&catalog, &id, "us-east-2");
        let _ = cold.record(t.elapsed().as_nanos() as u64);
        assert!(map.is_some_and(|m| m.shards.len() == 2));
    }
    let rss_cache = heap_bytes();
    let ids: Vec<String> = (0..TENANTS).map(|n| format!("tenant-{n}")).collect();
    let mut warm = Histogram::<u64>::new(3).expect("histogram");
    for _ in 0..(TENANTS * 5) {
        let id = &ids[rng.random_range(0..TENANTS)];
        let t = Instant::now();
        let map = cache.get(&catalog, id, "us-east-2");
        let _ = warm.record(t.elapsed().as_nanos() as u64);
        assert!(map.is_some());
    }
    let mut unknown = Histogram::<u64>::new(3).expect("histogram");
    for n in 0..TENANTS {
        let id = format!("no-such-{}", n % 1000);
        let t = Instant::now();
        let map = cache.get(&catalog, &id, "us-east-2");
        let _ = unknown.record(t.elapsed().as_nanos() as u64);
        assert!(map.is_none());
    }
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!("catalog of {TENANTS} tenants (2 shards, 4 replicas each + 2 model replicas): parsed and validated in {parse:.2?}");
    println!("| lookup | count | p50 ns | p99 ns | max ns |");
    println!("|---|---|---|---|---|");
    for (name, h) in [
        ("cold (resolve from catalog)", &cold),
        ("warm (cache hit)", &warm),
        ("unknown tenant (negative entry)", &unknown),
    ] {
        println!(
            "| {name} | {} | {} | {} | {} |",
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.max()
        );
    }
    println!(
        "live heap: {:.1} MiB before; catalog in memory {:.1} MiB (its TOML text: {:.1} MiB); {} cached replica maps {:.1} MiB",
        mb(rss0),
        mb(rss_catalog.saturating_sub(rss0)),
        mb(text_bytes),
        cache.stats().entries,
        mb(rss_cache.saturating_sub(rss_catalog)),
    );
}
