//! `export`: the server's memory while it streams an audit export of N records. Starts the real
//! binary on a fresh SQLite file with the demo data, loads N records into the demo clinic's
//! trail (from this process, straight into the file), asks for a CSV export as the clinic's
//! OWNER, downloads it as a client would and samples the server's resident memory (VmRSS) every
//! 50,000 records received. Flat means the growth over the idle server stays the same whatever N
//! is (it is what the chunks in flight and the allocator keep, not the export).

use std::time::Instant;

use anyhow::{Context, bail};
use caregraph::{db, domain::OrgId};
use serde_json::json;

use super::{audit, config, server::Server};

/// Records received between two memory samples.
const SAMPLE_EVERY: usize = 50_000;

/// Loads `records` audit records and measures one CSV export of them.
pub async fn run(records: usize) -> anyhow::Result<()> {
    let server = Server::start(&[("CAREGRAPH_AUDIT", "false")])?;
    let data = server
        .gql(
            "{ viewer { memberships { organization { id } } } }",
            json!({}),
        )
        .await?;
    let org = data["viewer"]["memberships"][0]["organization"]["id"]
        .as_str()
        .context("the demo OWNER's organisation")?
        .to_owned();
    let org_id = OrgId::parse(&org, "orgId")?;
    let conn = db::connect(&config(&server.database)?.database).await?;
    audit::load(&conn, org_id, records, "export").await?;
    conn.close().await?;

    // Settle: the server seals what was loaded (its sealer runs whether or not it records).
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let idle = server.rss_kib()?;
    let data = server
        .gql(
            "mutation($o: ID!) { exportAuditEvents(orgId: $o, format: CSV) { url } }",
            json!({"o": org}),
        )
        .await?;
    let url = data["exportAuditEvents"]["url"]
        .as_str()
        .context("url")?
        .to_owned();
    let url = if url.starts_with('/') {
        format!("{}{url}", server.base)
    } else {
        url
    };
    let started = Instant::now();
    let response = server.http.get(&url).send().await?;
    if !response.status().is_success() {
        bail!("the download answered {}", response.status());
    }
    println!("export: {records} records as CSV; server VmRSS idle before the download {idle} KiB");
    println!(
        "{:>10} {:>12} {:>12} {:>10}",
        "records", "MB received", "VmRSS KiB", "growth KiB"
    );
    let mut response = response;
    let (mut lines, mut bytes, mut next, mut peak) = (0usize, 0usize, SAMPLE_EVERY, idle);
    while let Some(chunk) = response.chunk().await? {
        bytes += chunk.len();
        lines += chunk.iter().filter(|&&b| b == b'\n').count();
        if lines > next {
            let rss = server.rss_kib()?;
            peak = peak.max(rss);
            println!(
                "{:>10} {:>12.1} {rss:>12} {:>10}",
                lines - 1,
                bytes as f64 / 1e6,
                rss.saturating_sub(idle)
            );
            next += SAMPLE_EVERY;
        }
    }
    let rss = server.rss_kib()?;
    peak = peak.max(rss);
    // The header line is not a record.
    let exported = lines.saturating_sub(1);
    println!(
        "{exported:>10} {:>12.1} {rss:>12} {:>10}",
        bytes as f64 / 1e6,
        rss.saturating_sub(idle)
    );
    println!(
        "exported {exported} records ({:.1} MB) in {:.1} s; peak growth {} KiB over the idle server",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64(),
        peak.saturating_sub(idle)
    );
    if exported != records {
        bail!("the export held {exported} records, not {records}");
    }
    Ok(())
}
