//! A minimal tandem client: searches one tenant of a running cluster.
//!
//! ```sh
//! ./target/release/tandem dev          # in another terminal
//! cargo run -p tandem-client --example search -- target/tandem-dev/topology.json tldr-en "extract a tar archive"
//! ```
//!
//! The topology file names every region's router and each tenant's API
//! key. The client sends the call to the first region's router and, if that
//! router is down, to the other region's, within the same deadline.

use std::time::Duration;

use tandem_client::{TandemClient, Topology};
use tandem_proto::v1::SearchRequest;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(topology), Some(tenant), Some(query)) = (args.next(), args.next(), args.next())
    else {
        eprintln!("usage: search TOPOLOGY.json TENANT QUERY");
        std::process::exit(2);
    };
    let topology = Topology::load(&topology)?;
    let config = topology.client_config(None, Some(&tenant))?;
    let client = TandemClient::connect(config)
        .await?
        .with_timeout(Duration::from_secs(2));
    let request = SearchRequest {
        tenant,
        query,
        top_k: 5,
        ..Default::default()
    };
    let (response, info) = client.search(request).await?;
    for hit in &response.hits {
        println!("{:6.2}  {}  {}", hit.score, hit.id, hit.title);
    }
    println!(
        "{} hits in all, answered by the {} router",
        response.total_hits, info.region
    );
    Ok(())
}
