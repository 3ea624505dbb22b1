//! `dashboard`: the PMS front page (`../shared/bench/dashboard.graphql`: the first 50
//! appointments of the organisation with `totalCount`, times, status, patient, practitioner,
//! meeting and chat) under load, as the bootstrapped OWNER, on the dataset of [`seed`], with the
//! server's defaults (its pool, log filter and background workers), on SQLite and, given a URL,
//! PostgreSQL.

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{
    load::{self, LoadArgs},
    on_each_database, seed,
    server::{Launch, Server},
};

/// The dashboard query: the PMS example's (`examples/pms/dashboard.graphql`), which is
/// `../shared/bench/dashboard.graphql`.
pub const QUERY: &str = include_str!("../../../examples/pms/dashboard.graphql");

/// Where the benchmark's copy of the query is, from the checkout's root.
const QUERY_FILE: &str = "../shared/bench/dashboard.graphql";

/// The selection the dashboard asks per appointment (inside `nodes { … }`, braces excluded).
pub fn appointment_fields() -> anyhow::Result<&'static str> {
    let start = QUERY
        .find("nodes {")
        .context("no nodes in the dashboard query")?
        + "nodes {".len();
    let mut depth = 1;
    for (i, c) in QUERY[start..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 1 => return Ok(&QUERY[start..start + i]),
            '}' => depth -= 1,
            _ => {}
        }
    }
    bail!("the dashboard query's nodes selection is not closed")
}

/// The server's environment for the dashboard's dataset: the seed books the OWNER into
/// overlapping appointments.
pub const SERVER_ENV: &[(&str, &str)] = &[("CAREGRAPH_ALLOW_OVERBOOKING", "true")];

/// Fails when [`QUERY_FILE`] exists and differs from [`QUERY`] (whitespace aside).
fn check_query_file() -> anyhow::Result<()> {
    let Ok(reference) = std::fs::read_to_string(QUERY_FILE) else {
        eprintln!("{QUERY_FILE} not found from here: the query is not compared with it");
        return Ok(());
    };
    let tokens = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    if tokens(&reference) != tokens(QUERY) {
        bail!(
            "{QUERY_FILE} is not examples/pms/dashboard.graphql any more: the benchmark would not send it"
        );
    }
    Ok(())
}

/// The dashboard's first page as the OWNER of `org` sees it, checked: 50 appointments of the
/// seeded 220.
pub async fn first_page(server: &Server, org: &str) -> anyhow::Result<Vec<Value>> {
    let data = server.gql(QUERY, json!({"orgId": org})).await?;
    let page = &data["appointments"];
    let nodes = page["nodes"].as_array().context("appointments.nodes")?;
    if nodes.len() != 50 || page["totalCount"] != 220 {
        bail!(
            "expected 50 of 220 appointments, got {} of {}",
            nodes.len(),
            page["totalCount"]
        );
    }
    Ok(nodes.clone())
}

/// Starts a server on `url` with the dashboard's dataset.
pub async fn seeded_server(
    url: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<(Server, seed::Seeded)> {
    let server = Server::launch(&Launch {
        database: Some(url),
        demo: false,
        log: None,
        env,
    })?;
    let seeded = seed::seed(&server).await?;
    Ok((server, seeded))
}

/// Runs the dashboard workload on each database.
pub async fn run(args: &LoadArgs) -> anyhow::Result<()> {
    check_query_file()?;
    on_each_database(args.postgres.as_deref(), async |label, url| {
        let (server, seeded) = seeded_server(url, SERVER_ENV).await?;
        let nodes = first_page(&server, &seeded.org_id).await?;
        let with = |key: &str| nodes.iter().filter(|n| !n[key].is_null()).count();
        println!(
            "dashboard on {label}: 50 of 220 appointments per request ({} with a meeting, {} with a chat), as the OWNER",
            with("meeting"),
            with("chat")
        );
        let body = load::graphql_body(QUERY, json!({"orgId": seeded.org_id}))?;
        load::table(&server, vec![body], args, None).await
    })
    .await
}
