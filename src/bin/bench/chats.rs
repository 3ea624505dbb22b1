//! `chats`: the PMS chat list (`chatSessions(orgId, first: 50)` with `lastMessage`,
//! `unreadCount` and members) under load, as the bootstrapped OWNER, with the Stream provider
//! pointed at the fake this benchmark runs ([`stream_fake`]). The dataset is the dashboard's
//! (its appointment chats are created at the fake through caregraph) plus [`GROUPS`] group chats
//! of the OWNER with a practitioner and a support colleague, in which the practitioner posts 1
//! to 3 messages and, in every third, the OWNER answers, so that the OWNER's list is longer than
//! a page and shows last messages and unread counts. Besides the common figures it prints the
//! provider's channel reads (`POST /channels`) per page, next to ceil(page / 30), Stream's
//! batch limit.

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::{
    dashboard,
    load::{self, Column, LoadArgs},
    on_each_database,
    seed::{Seeded, text},
    server::Server,
    stream_fake::{self, API_KEY, API_SECRET, QUERY_CHANNELS_MAX},
};

/// Group chats added to the dashboard's dataset.
const GROUPS: usize = 40;

/// The chat list query.
pub const QUERY: &str = "query ChatList($orgId: ID!) {
  chatSessions(orgId: $orgId, first: 50) {
    pageInfo {
      hasNextPage
      endCursor
    }
    nodes {
      id
      category
      status
      title
      isGroup
      memberCount
      unreadCount
      lastMessage {
        id
        text
        sentAt
        author
        system
      }
      members {
        role
        user {
          id
          displayName
        }
      }
    }
  }
}
";

/// Adds the group chats and their messages through the API.
async fn groups(server: &Server, seeded: &Seeded) -> anyhow::Result<()> {
    let colleagues = &seeded.practitioners[1..];
    for k in 0..GROUPS {
        let practitioner = &colleagues[k % colleagues.len()];
        let support = &seeded.support[k % seeded.support.len()];
        let d = server
            .gql(
                "mutation($org: ID!, $in: CreateGroupChatInput!) { createGroupChat(orgId: $org, input: $in) { id } }",
                json!({"org": seeded.org_id, "in": {
                    "title": format!("Ward round {k}"),
                    "memberIds": [practitioner.id, support],
                }}),
            )
            .await?;
        let session = text(&d["createGroupChat"]["id"])?;
        let send =
            "mutation($s: ID!, $t: String!) { sendChatMessage(sessionId: $s, text: $t) { id } }";
        for n in 0..=k % 3 {
            server
                .gql_as(
                    &practitioner.token,
                    send,
                    json!({"s": session, "t": format!("Round {k}, note {n}: all stable")}),
                )
                .await?;
        }
        if k % 3 == 0 {
            server
                .gql(send, json!({"s": session, "t": "Thanks, noted"}))
                .await?;
        }
    }
    Ok(())
}

/// Runs the chat-list workload on each database.
pub async fn run(args: &LoadArgs) -> anyhow::Result<()> {
    on_each_database(args.postgres.as_deref(), async |label, url| {
        let fake = stream_fake::start().await?;
        let mut env = dashboard::SERVER_ENV.to_vec();
        env.extend([
            ("CAREGRAPH_CHAT_PROVIDER", "stream"),
            ("STREAM_API_KEY", API_KEY),
            ("STREAM_API_SECRET", API_SECRET),
            ("STREAM_BASE_URL", fake.base.as_str()),
        ]);
        let (server, seeded) = dashboard::seeded_server(url, &env).await?;
        groups(&server, &seeded).await?;

        let variables = json!({"orgId": seeded.org_id});
        let reads_before = fake.channel_reads();
        let data = server.gql(QUERY, variables.clone()).await?;
        let reads_one = fake.channel_reads() - reads_before;
        let nodes = data["chatSessions"]["nodes"]
            .as_array()
            .context("chatSessions.nodes")?;
        let page = nodes.len();
        if page == 0 {
            bail!("the OWNER's chat list is empty");
        }
        let count = |f: &dyn Fn(&Value) -> bool| nodes.iter().filter(|n| f(n)).count();
        let with_message = count(&|n| !n["lastMessage"].is_null());
        let unread: u64 = nodes.iter().filter_map(|n| n["unreadCount"].as_u64()).sum();
        if with_message == 0 || count(&|n| n["unreadCount"].is_null()) > 0 {
            bail!("the chat list shows no provider state: {data}");
        }
        let batches = page.div_ceil(QUERY_CHANNELS_MAX) as u64;
        println!(
            "chats on {label}: chatSessions(first: 50) as the OWNER, the dataset holding {} appointment chats and {GROUPS} groups; a page of {page} sessions ({} groups, {with_message} with a last message, {unread} unread in all, hasNextPage {}); Stream fake: one page took {reads_one} channel reads, ceil({page} / {QUERY_CHANNELS_MAX}) = {batches}",
            seeded.chats,
            count(&|n| n["isGroup"] == true),
            data["chatSessions"]["pageInfo"]["hasNextPage"],
        );
        let reads = || fake.channel_reads();
        let per_page = |m: &load::Measurement| {
            format!(
                "{:.2} (ceil {batches})",
                m.extra as f64 / m.requests.max(1) as f64
            )
        };
        let column = Column {
            header: "reads/page",
            counter: &reads,
            cell: &per_page,
        };
        let other_before = fake.other_calls();
        load::table(
            &server,
            vec![load::graphql_body(QUERY, variables)?],
            args,
            Some(&column),
        )
        .await?;
        println!(
            "other Stream calls while loading (scheduler, outbox): {}",
            fake.other_calls() - other_before
        );
        Ok(())
    })
    .await
}
