//! The router's web console in a real browser: headless Chromium driven
//! over WebDriver (Debian's `chromium` and `chromium-driver`; `.ci/run`
//! installs them). Against a `tandem dev` cluster: the page shows nothing
//! without the admin token; logged in through the URL fragment, it lists
//! both regions and every endpoint; a search from the page shows its hits
//! and route; with us-east-1's index-nodes killed, the endpoints show
//! ejected and a search of the active-active tenant shows a fallback route
//! to us-east-2.
//!
//! Without Chromium the test fails when `CI` is set and is skipped (with a
//! message) otherwise. With `TANDEM_SCREENSHOTS=DIR` it saves the pages it
//! sees as PNG files there (the screenshots in docs/operations.md).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use tandem_cli::dev::{start_cluster, DevOptions};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(CHROMEDRIVER)
        .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver { child, port }
}

async fn browser(driver: &Driver, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session")
}

/// The text of the element `css`.
async fn text(page: &Client, css: &str) -> String {
    page.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap_or_default()
}

/// Waits until the text of `css` satisfies `ok`; returns it.
async fn wait_for(page: &Client, css: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = text(page, css).await;
        if ok(&now) {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{css} never showed what was expected: {now}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn screenshot(page: &Client, name: &str) {
    let Some(dir) = std::env::var_os("TANDEM_SCREENSHOTS").map(PathBuf::from) else {
        return;
    };
    let png = page.screenshot().await.expect("screenshot");
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
}

async fn search_from_page(page: &Client, tenant: &str, key: &str, query: &str) -> String {
    for (id, value) in [
        ("search-tenant", tenant),
        ("search-key", key),
        ("search-query", query),
    ] {
        let field = page.find(Locator::Id(id)).await.expect(id);
        field.clear().await.expect("clear");
        field.send_keys(value).await.expect("type");
    }
    let before = text(page, "#route").await;
    page.find(Locator::Id("search-go"))
        .await
        .expect("search button")
        .click()
        .await
        .expect("click");
    wait_for(page, "#route", |r| r != before && r.starts_with("route:")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_cluster_searches_and_sees_a_fallback() {
    if !(Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set and Chromium is missing: install chromium and chromium-driver"
        );
        eprintln!(
            "skipped: no {CHROMIUM} or {CHROMEDRIVER} (apt-get install chromium chromium-driver)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = DevOptions::new(dir.path().join("dev"), tandem_e2e::repo_root());
    opts.docs_limit = Some(200);
    opts.bin_dir = Some(tandem_e2e::target_dir());
    let cluster = start_cluster(&opts).await.expect("cluster");
    let topology = cluster.current_topology();
    let console = topology.regions[0]
        .console
        .clone()
        .expect("regions[].console");
    let driver = start_driver();
    let page = browser(&driver, &dir.path().join("chromium")).await;

    // Without the token: a login form and nothing of the cluster.
    page.goto(&console).await.expect("open the console");
    assert!(page
        .find(Locator::Id("console"))
        .await
        .expect("main")
        .attr("hidden")
        .await
        .expect("attr")
        .is_some());
    assert!(text(&page, "body").await.contains("admin token"));
    assert!(!text(&page, "body").await.contains("use1-index-1"));

    // Logged in through the fragment.
    page.goto(&format!("{console}#token={}", topology.admin_token))
        .await
        .expect("open with the token");
    page.refresh().await.expect("reload");
    let regions = wait_for(&page, "#regions", |t| t.contains("us-east-2")).await;
    assert!(
        regions.contains("us-east-1") && regions.contains("100 %"),
        "{regions}"
    );
    let endpoints = wait_for(&page, "#endpoints", |t| t.contains("use2-index-1")).await;
    assert!(
        endpoints.contains("healthy") && !endpoints.contains("ejected"),
        "{endpoints}"
    );
    let tenants = text(&page, "#tenants").await;
    assert!(
        tenants.contains("tldr-en") && tenants.contains("use1-index-1"),
        "{tenants}"
    );

    let key = topology.tenant("tldr-en").expect("tenant").api_key.clone();
    let route = search_from_page(&page, "tldr-en", &key, "list files").await;
    assert!(
        route.contains("entry us-east-1 -> served us-east-1"),
        "{route}"
    );
    assert!(!text(&page, "#results").await.is_empty());
    screenshot(&page, "console").await;

    // us-east-1's index-nodes die: the console sees them ejected, and the
    // active-active tenant's searches fall back to us-east-2.
    for p in cluster
        .processes
        .iter()
        .filter(|p| p.id.starts_with("use1-index"))
    {
        let _ = Command::new("kill")
            .args(["-KILL", &p.pid.to_string()])
            .status();
    }
    let mut fallback = String::new();
    for _ in 0..20 {
        fallback = search_from_page(&page, "tldr-en", &key, "list files").await;
        if fallback.contains("served us-east-2") {
            break;
        }
    }
    assert!(
        fallback.contains("served us-east-2") && fallback.contains("use2-index-1"),
        "{fallback}"
    );
    let ejected = wait_for(&page, "#endpoints", |t| t.contains("ejected")).await;
    assert!(ejected.contains("use1-index-1"), "{ejected}");
    screenshot(&page, "console-fallback").await;

    let _ = page.close().await;
    cluster.stop(Duration::from_secs(5)).await;
}
