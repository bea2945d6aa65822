//! Overload and fairness, in one run on the same machine.
//!
//! **Overload.** A fleet (router + index-node holding the English tldr
//! pages as one shard, no model) is measured closed-loop at concurrency
//! 16 (its capacity, and its p99 at capacity), then offered 3x that
//! capacity open-loop (natural-language queries, 1 s client deadline),
//! then, as the overload ends, half its capacity for 3 s. Reports the
//! goodput as a share of capacity, the successful searches' p99 as a
//! multiple of the p99 at capacity, how fast shed calls were answered,
//! and how long after the overload the fleet served every call within
//! twice its p99 at capacity again. The same for a fleet whose router's
//! admission limit is out of reach (`--min-concurrent-searches 100000`),
//! where only the index-node's queue bounds sheds, for comparison.
//!
//! **Fairness.** Tenants `quiet` and `flood` on one index-node behind one
//! router; `flood` has a quota of 16 searches at once. `quiet` searches at
//! 50/s (its own client: a connection and a thread of its own) alone, then
//! while `flood` offers 1x and 3x the fleet's capacity of expensive
//! searches (offset 490, 10 hits). Reports `quiet`'s p99 with the flood as
//! a multiple of its p99 alone.
//!
//! Run: `cargo build --release --bins && cargo bench -p tandem-benches
//! --bench overload` (`BENCH_SECONDS=N` per phase, default 5).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tandem_benches::fleets::{start, FleetFlags, API_KEY, TENANT};
use tandem_benches::open_loop::{self, Record};
use tandem_benches::{closed_loop, search_call};
use tonic::transport::Channel;
use tonic::Code;

/// Every client call's deadline.
const DEADLINE: Duration = Duration::from_secs(1);

/// What one fleet did under overload.
struct Overloaded {
    capacity_qps: f64,
    capacity_p99_us: u64,
    offered_qps: f64,
    records: Vec<Record>,
    recovery: Vec<Record>,
    seconds: f64,
}

async fn overload(channel: &Channel, queries: &Arc<Vec<String>>, seconds: u64) -> Overloaded {
    let duration = Duration::from_secs(seconds);
    let closed = search_call(channel.clone(), TENANT, API_KEY);
    closed_loop(4, Duration::from_millis(500), queries.clone(), move |q| {
        closed(q)
    })
    .await;
    let closed = search_call(channel.clone(), TENANT, API_KEY);
    let capacity = closed_loop(16, duration, queries.clone(), move |q| closed(q)).await;
    let call = open_loop::search(channel.clone(), (TENANT, API_KEY), (0, 10), DEADLINE);
    let offered_qps = 3.0 * capacity.qps;
    let (records, recovery) = tokio::join!(
        open_loop::run(offered_qps, duration, queries.clone(), call.clone()),
        async {
            tokio::time::sleep(duration).await;
            open_loop::run(
                capacity.qps / 2.0,
                Duration::from_secs(3),
                queries.clone(),
                call.clone(),
            )
            .await
        }
    );
    Overloaded {
        capacity_qps: capacity.qps,
        capacity_p99_us: capacity.p99_us,
        offered_qps,
        records,
        recovery,
        seconds: duration.as_secs_f64(),
    }
}

fn report(name: &str, o: &Overloaded) {
    let ok = open_loop::count(&o.records, Code::Ok);
    let shed = open_loop::count(&o.records, Code::ResourceExhausted);
    let other = open_loop::other_failures(&o.records);
    let goodput = ok as f64 / o.seconds;
    let ok_p99 = open_loop::p99_us(&o.records, |r| r.code == Code::Ok);
    let shed_p99 = open_loop::p99_us(&o.records, |r| r.code == Code::ResourceExhausted);
    let recovered = open_loop::recovered_after(&o.recovery, Duration::ZERO, 2 * o.capacity_p99_us)
        .map_or("never".to_string(), |d| format!("{} ms", d.as_millis()));
    println!(
        "| {name} | {:.0} | {:.1} | {:.0} | {goodput:.0} | **{:.2}** | {:.1} | **{:.2}** | {shed} | **{:.1}** | {other} | **{recovered}** |",
        o.capacity_qps,
        o.capacity_p99_us as f64 / 1000.0,
        o.offered_qps,
        goodput / o.capacity_qps,
        ok_p99 as f64 / 1000.0,
        ok_p99 as f64 / o.capacity_p99_us.max(1) as f64,
        shed_p99 as f64 / 1000.0,
    );
}

/// Tenants `quiet` and `flood` on the fleet's one index-node; `flood` may
/// have 16 searches in flight.
fn two_tenant_catalog(scheme: &str, node: SocketAddr) -> String {
    let tenant = |id: &str, quota: &str| {
        format!(
            "[[tenants]]\nid = \"{id}\"\nhome = \"r1\"\nactive_active = false\nlanguage = \"en\"\n\
             api_key_sha256 = [\"{}\"]\n{quota}\n[tenants.shards]\n0 = [\"idx\"]\n\n",
            tandem_catalog::hash_key(&format!("key-{id}")),
        )
    };
    format!(
        "format = 4\n[[regions]]\nid = \"r1\"\npair = \"r2\"\n\n[[regions]]\nid = \"r2\"\npair = \"r1\"\n\n\
         [[nodes]]\nid = \"idx\"\nregion = \"r1\"\nkind = \"index\"\naddr = \"{scheme}://{node}\"\n\n{}{}",
        tenant("quiet", ""),
        tenant("flood", "quota = { concurrent_searches = 16 }"),
    )
}

/// The quiet tenant's load (50 searches/s for `duration`) as its own
/// client would send it: its own connection and its own thread, so that
/// what it measures is the fleet, not the flood's client beside it.
fn quiet_load(
    router: SocketAddr,
    queries: Arc<Vec<String>>,
    duration: Duration,
) -> std::thread::JoinHandle<Vec<Record>> {
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let channel = Channel::from_shared(format!("http://{router}"))
                .expect("address")
                .connect()
                .await
                .expect("router");
            let quiet = open_loop::search(channel, ("quiet", "key-quiet"), (0, 10), DEADLINE);
            open_loop::run(50.0, Duration::from_secs(1), queries.clone(), quiet.clone()).await;
            open_loop::run(50.0, duration, queries, quiet).await
        })
    })
}

async fn fairness(channel: &Channel, router: SocketAddr, queries: &Arc<Vec<String>>, seconds: u64) {
    let duration = Duration::from_secs(seconds);
    let flood = open_loop::search(channel.clone(), ("flood", "key-flood"), (490, 10), DEADLINE);
    let closed = search_call(channel.clone(), "quiet", "key-quiet");
    let capacity = closed_loop(16, duration, queries.clone(), move |q| closed(q)).await;
    let alone = tokio::task::block_in_place(|| {
        quiet_load(router, queries.clone(), duration)
            .join()
            .expect("quiet load")
    });
    let p99 = |r: &[Record]| open_loop::p99_us(r, |r| r.code == Code::Ok);
    let failed = |r: &[Record]| r.len() - open_loop::count(r, Code::Ok);
    println!("\n| quiet tenant at 50/s | p99 ms | failed | p99 / alone |\n|---|---|---|---|");
    let alone_ms = p99(&alone) as f64 / 1000.0;
    println!("| alone | {alone_ms:.1} | {} | 1.00 |", failed(&alone));
    for times in [1.0, 3.0] {
        let beside = quiet_load(router, queries.clone(), duration);
        // The flood starts as the quiet tenant's warm-up (1 s) ends.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let rate = times * capacity.qps;
        let flooding = open_loop::run(rate, duration, queries.clone(), flood.clone()).await;
        let beside = tokio::task::block_in_place(|| beside.join().expect("quiet load"));
        println!(
            "| beside a flood of {times}x capacity ({rate:.0}/s; {} served) | {:.1} | {} | **{:.2}** |",
            open_loop::count(&flooding, Code::Ok),
            p99(&beside) as f64 / 1000.0,
            failed(&beside),
            p99(&beside) as f64 / p99(&alone).max(1) as f64
        );
    }
}

fn main() -> anyhow::Result<()> {
    let seconds = tandem_benches::bench_seconds();
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(async move {
        let dir = tempfile::tempdir()?;
        let (on_dir, off_dir, fair_dir) = (dir.path().join("on"), dir.path().join("off"), dir.path().join("fair"));
        tandem_benches::write_english_shard(&on_dir.join("index"), TENANT)?;
        tandem_benches::copy_dir(&on_dir.join("index"), &off_dir.join("index"))?;
        for tenant in ["quiet", "flood"] {
            tandem_benches::write_english_shard(&fair_dir.join("index"), tenant)?;
        }
        let queries = Arc::new(tandem_loadgen::natural_language_queries());
        println!("router + index-node, English tldr pages, {} natural-language queries, top 10, client deadline 1 s; {seconds} s per phase\n", queries.len());
        println!("| fleet | capacity QPS (c16) | p99 at capacity ms | offered QPS | goodput QPS | goodput / capacity | success p99 ms | success p99 / p99 at capacity | shed | shed p99 ms | other failures | served again after |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        let off_flags = ["--min-concurrent-searches", "100000", "--max-concurrent-searches", "100000"].map(String::from);
        for (name, dir, router) in [("admission on (defaults)", &on_dir, &[][..]), ("admission limit out of reach", &off_dir, &off_flags[..])] {
            let fleet = start(dir, FleetFlags { router, ..FleetFlags::default() }).await?;
            report(name, &overload(&fleet.channel, &queries, seconds).await);
        }
        let fleet = start(&fair_dir, FleetFlags { catalog: Some(two_tenant_catalog), ..FleetFlags::default() }).await?;
        fairness(&fleet.channel, fleet.router, &queries, seconds).await;
        anyhow::Ok(())
    })
}
