//! `tandem dev` in the foreground: start, say how to use it, wait for
//! Ctrl-C / SIGTERM, stop everything.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tandem_client::NodeInfo;

use super::{start_cluster, Cluster, DevOptions};

/// Runs the cluster until Ctrl-C or SIGTERM, then stops every process it
/// started and every process a drill restarted meanwhile.
pub async fn run(opts: DevOptions) -> anyhow::Result<()> {
    let started = Instant::now();
    let cluster = match start_cluster(&opts).await {
        Ok(c) => c,
        Err(e) => {
            return Err(e.context(format!(
                "tandem dev failed; process logs are in {}/logs",
                opts.data_dir.display()
            )))
        }
    };
    print_banner(&cluster, &opts, started.elapsed());

    // Drills kill and freeze processes on purpose; only Ctrl-C / SIGTERM
    // ends the cluster.
    tandem_common::server::shutdown_signal().await;
    println!("stopping...");
    cluster.stop(Duration::from_secs(5)).await;
    println!("stopped");
    Ok(())
}

fn print_banner(cluster: &Cluster, opts: &DevOptions, elapsed: Duration) {
    let t = &cluster.topology;
    println!(
        "\ntandem dev: two regions serving after {:.1} s",
        elapsed.as_secs_f64()
    );
    for r in &t.regions {
        println!(
            "  {:<10} router {:<21} metrics http://{}/metrics",
            r.name,
            r.router,
            r.metrics.clone().unwrap_or_default()
        );
        if let Some(console) = &r.console {
            println!("  {:<10} console {console}#token={}", "", t.admin_token);
        }
    }
    for n in t.nodes.iter().filter(|n| n.kind != NodeInfo::KIND_ROUTER) {
        println!(
            "  {:<16} {:<6} {:<10} {:<21} pid {}",
            n.id,
            n.kind,
            n.region,
            n.addr,
            n.pid.unwrap_or(0)
        );
    }
    for tenant in &t.tenants {
        println!(
            "  tenant {:<8} {} home {}, key {}",
            tenant.id,
            if tenant.active_active {
                "active-active,"
            } else {
                "single-region,"
            },
            tenant.home,
            tenant.api_key
        );
    }
    let dir = display_path(&cluster.data_dir);
    println!("  topology: {dir}/topology.json; logs: {dir}/logs\n");
    let exe = std::env::current_exe()
        .map(|p| display_path(&p))
        .unwrap_or_else(|_| "tandem".into());
    // The client commands find the default data directory's topology by
    // themselves; any other needs naming.
    let topology = if opts.data_dir == Path::new(crate::commands::DEFAULT_DATA_DIR) {
        String::new()
    } else {
        format!(" --topology {dir}/topology.json")
    };
    println!("try (in another terminal, from this directory):");
    println!("  {exe} search{topology} --tenant tldr-en \"extract a tar archive\"");
    println!("  {exe} suggest{topology} --tenant tldr-en \"ext\"");
    println!("  {exe} status{topology}");
    println!("  {exe} dial{topology} us-east-1 50");
    println!("  {exe} train{topology} --tenant tldr-en");
    println!("  {exe} drill{topology} index-killed --duration 15");
    println!("Ctrl-C stops every process.");
}

/// `path` relative to the working directory when it is under it (shorter
/// to read and to paste), else as is.
fn display_path(path: &Path) -> String {
    let relative: Option<PathBuf> = std::env::current_dir()
        .ok()
        .and_then(|cwd| path.strip_prefix(cwd).ok().map(Path::to_path_buf));
    match relative {
        Some(r) if !r.as_os_str().is_empty() => format!("./{}", r.display()),
        _ => path.display().to_string(),
    }
}
