//! `appointment`: the single `appointment(id)` query with the fields the dashboard asks per
//! appointment (patient, practitioner, meeting, chat) under load, as the bootstrapped OWNER, on
//! the dashboard's dataset. The ids are the dashboard's first page (50), each connection taking
//! them in turn; before the load, each one's answer is compared with its dashboard row.

use anyhow::{Context, bail};
use serde_json::json;

use super::{
    dashboard,
    load::{self, LoadArgs},
    on_each_database,
};

/// The query: `appointment(id)` with the dashboard's selection per appointment.
pub fn query() -> anyhow::Result<String> {
    Ok(format!(
        "query Appointment($id: ID!) {{\n  appointment(id: $id) {{{}}}\n}}\n",
        dashboard::appointment_fields()?
    ))
}

/// Runs the appointment workload on each database.
pub async fn run(args: &LoadArgs) -> anyhow::Result<()> {
    on_each_database(args.postgres.as_deref(), async |label, url| {
        let (server, seeded) = dashboard::seeded_server(url, dashboard::SERVER_ENV).await?;
        let rows = dashboard::first_page(&server, &seeded.org_id).await?;
        let query = query()?;
        let mut bodies = Vec::with_capacity(rows.len());
        for row in &rows {
            let id = row["id"].as_str().context("an appointment id")?;
            let data = server.gql(&query, json!({"id": id})).await?;
            if data["appointment"] != *row {
                bail!(
                    "appointment({id}) answered {}, its dashboard row is {row}",
                    data["appointment"]
                );
            }
            bodies.push(load::graphql_body(&query, json!({"id": id}))?);
        }
        println!(
            "appointment on {label}: appointment(id) with the dashboard's fields, the {} ids of its first page in turn, as the OWNER",
            bodies.len()
        );
        load::table(&server, bodies, args, None).await
    })
    .await
}
