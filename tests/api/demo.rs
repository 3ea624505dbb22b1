//! The demo data a first start seeds: the owner's dashboard shows a day of the clinic's work
//! (finished, under way, later), with the chats, claim, care team, team channel and free slots
//! the README's walkthrough uses; a restart seeds nothing more; a chat provider that is down
//! costs the demo its messages, nothing else; on Stream the day is the same.

use std::time::Instant;

use chrono::{Duration, NaiveTime, Utc};
use serde_json::{Value, json};

use crate::{
    fakes::{self, FakeProvider},
    helpers::{TestApp, quick, settle},
};

// The README walkthrough's queries, as printed there.
const CLINIC: &str =
    "{ viewer { user { displayName } memberships { role organization { id name } } } }";
const DASHBOARD: &str = "query Dashboard($org: ID!) {
  appointments(orgId: $org, first: 50) {
    nodes {
      startsAt status reason patient { name } client { displayName }
      practitioner { id displayName } supportStaff { displayName }
      meeting { state joinableFrom joinableUntil roomName }
      chat { id status }
    }
  }
}";
const OPEN_CHAT: &str = "query OpenChat($org: ID!) {
  appointments(orgId: $org, status: IN_PROGRESS, first: 1) {
    nodes { chat { status members { role user { displayName } }
      messages(first: 10) { nodes { text author sentAt } } } }
  }
}";
const MY_CHATS: &str = "query MyChats($org: ID!) {
  chatSessions(orgId: $org) { nodes { id title category status memberCount lastMessage { text } } }
}";
const CLAIM: &str = "query Claim($org: ID!) {
  caseByReference(orgId: $org, reference: \"CLM-1042\") {
    title kind status participants { role user { displayName } }
    chat { status members { role user { displayName } } }
  }
}";
const CARE_TEAMS: &str = "query CareTeams($org: ID!) {
  patients(orgId: $org) {
    nodes { name careTeams { name
      members { role external displayName phone user { displayName } }
      chat { status members { user { displayName } }
        externalMembers { name phoneNumber optedOut } } } }
  }
}";
const SLOTS: &str = "query Slots($org: ID!, $vet: ID!, $from: DateTime!, $to: DateTime!) {
  practitionerAvailability(orgId: $org, practitionerId: $vet) {
    timezone slotMinutes weekly { weekday start end }
  }
  availableSlots(orgId: $org, practitionerId: $vet, from: $from, to: $to,
    sessionType: TELECONFERENCE) { startsAt endsAt }
}";
const SAY: &str = "mutation Say($chat: ID!) {
  sendChatMessage(sessionId: $chat, text: \"Hello from the front office\") { id sentAt }
}";
const TOKEN: &str = "mutation { issueChatToken { provider userId token expiresAt } }";

fn demo(v: &mut std::collections::HashMap<String, String>) {
    quick(v);
    v.insert("CAREGRAPH_DEMO".into(), "true".into());
}

/// The owner's token and the clinic's id.
async fn owner_and_clinic(app: &TestApp) -> (String, Value) {
    let owner = app
        .token_for_email(caregraph::services::demo::OWNER_EMAIL)
        .await;
    let me = app.ok(&owner, CLINIC, json!({}), "viewer").await;
    assert_eq!(me["memberships"][0]["role"], "OWNER");
    let org = me["memberships"][0]["organization"]["id"].clone();
    (owner, org)
}

/// The `nodes` of the walkthrough query `query` (rooted at `field`) with `{"org": org}`.
async fn nodes(app: &TestApp, owner: &str, query: &str, org: &Value, field: &str) -> Value {
    app.ok(owner, query, json!({ "org": org }), field).await["nodes"].clone()
}

/// The values of `field` (a `/`-separated path) in each of `list`'s items.
fn each<'a>(list: &'a Value, field: &str) -> Vec<&'a Value> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|v| field.split('/').fold(v, |v, f| &v[f]))
        .collect()
}

/// The README's walkthrough, step by step, on the demo data.
#[tokio::test]
async fn the_readme_walkthrough_works_on_the_demo_data() {
    let started = Instant::now();
    let app = TestApp::spawn_with(demo).await;
    eprintln!(
        "a demo start (migrations and seed) took {:?}",
        started.elapsed()
    );
    let (owner, org) = owner_and_clinic(&app).await;
    let vars = json!({ "org": org });

    // 2. Today's dashboard, by start time.
    let day = nodes(&app, &owner, DASHBOARD, &org, "appointments").await;
    assert_eq!(each(&day, "status").len(), 3, "{day}");
    assert_eq!(
        each(&day, "status"),
        ["COMPLETED", "IN_PROGRESS", "UPCOMING"]
    );
    assert_eq!(
        each(&day, "meeting/state"),
        ["CLOSED", "OPEN", "NOT_YET_OPEN"]
    );
    assert_eq!(each(&day, "chat/status"), ["CLOSED", "ACTIVE", "PENDING"]);
    let today = Utc::now();
    for starts in each(&day, "startsAt") {
        let at: chrono::DateTime<Utc> = starts.as_str().expect("time").parse().expect("time");
        assert!(
            (at - today).abs() < Duration::hours(4),
            "relative to now: {at}"
        );
    }
    assert_eq!(day[1]["patient"]["name"], "Mochi");
    assert_eq!(day[1]["supportStaff"][0]["displayName"], "Sam Rivera");

    // 3. The chat under way has its messages (no system message: nobody closed it).
    let open = nodes(&app, &owner, OPEN_CHAT, &org, "appointments").await[0]["chat"].clone();
    assert_eq!(open["status"], "ACTIVE");
    assert_eq!(open["members"].as_array().expect("members").len(), 3);
    let texts = each(&open["messages"]["nodes"], "text");
    assert_eq!(texts.len(), 3, "{open}");
    assert!(
        texts[2]
            .as_str()
            .expect("text")
            .contains("drinking a lot more water"),
        "newest first: {texts:?}"
    );

    // 4. The owner's own chats: the claim's room and the team channel.
    let mine = nodes(&app, &owner, MY_CHATS, &org, "chatSessions").await;
    let mut categories: Vec<&str> = each(&mine, "category")
        .iter()
        .map(|c| c.as_str().expect("category"))
        .collect();
    categories.sort_unstable();
    assert_eq!(categories, ["CASE", "GROUP"], "{mine}");
    let group = mine
        .as_array()
        .expect("chats")
        .iter()
        .find(|c| c["category"] == "GROUP")
        .expect("the team channel");
    assert_eq!(group["title"], "Riverside team");
    assert_eq!(group["memberCount"], 5);
    assert!(group["lastMessage"]["text"].is_string(), "{group}");

    // 5. The claim and its room.
    let claim = app.ok(&owner, CLAIM, vars.clone(), "caseByReference").await;
    assert_eq!(claim["kind"], "CLAIM");
    assert_eq!(claim["participants"].as_array().expect("people").len(), 3);
    assert_eq!(claim["chat"]["status"], "ACTIVE");
    assert_eq!(
        claim["chat"]["members"].as_array().expect("members").len(),
        3
    );

    // 6. The care team, its chat and its outside member.
    let patients = nodes(&app, &owner, CARE_TEAMS, &org, "patients").await;
    let mochi = patients
        .as_array()
        .expect("patients")
        .iter()
        .find(|p| p["name"] == "Mochi")
        .expect("Mochi");
    let team = &mochi["careTeams"][0];
    assert_eq!(team["name"], "Mochi's kidney care");
    let outside: Vec<&Value> = team["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["external"] == true)
        .collect();
    assert_eq!(outside.len(), 1, "{team}");
    assert_eq!(
        outside[0]["phone"],
        caregraph::services::demo::OUTSIDE_CLINICIAN_PHONE
    );
    assert!(outside[0]["user"].is_null());
    assert_eq!(team["chat"]["status"], "ACTIVE");
    assert_eq!(
        team["chat"]["members"].as_array().expect("members").len(),
        2
    );
    // The outside clinician takes part in the team's chat by SMS.
    let external = team["chat"]["externalMembers"]
        .as_array()
        .expect("externalMembers");
    assert_eq!(external.len(), 1, "{team}");
    assert_eq!(
        external[0]["phoneNumber"],
        caregraph::services::demo::OUTSIDE_CLINICIAN_PHONE
    );
    assert_eq!(external[0]["optedOut"], false);

    // 7. Free slots tomorrow for the vet of the finished appointment.
    let tomorrow = (today + Duration::days(1))
        .date_naive()
        .and_time(NaiveTime::MIN)
        .and_utc();
    let slots = app
        .gql(
            Some(&owner),
            SLOTS,
            json!({"org": org, "vet": day[0]["practitioner"]["id"],
                "from": tomorrow.to_rfc3339(), "to": (tomorrow + Duration::days(1)).to_rfc3339()}),
        )
        .await;
    assert!(slots.get("errors").is_none(), "{slots}");
    assert_eq!(
        slots["data"]["practitionerAvailability"]["timezone"],
        "Europe/London"
    );
    assert!(
        !slots["data"]["availableSlots"]
            .as_array()
            .expect("slots")
            .is_empty(),
        "{slots}"
    );

    // 8. Say something in the team channel; a chat token for the SDK.
    app.ok(&owner, SAY, json!({"chat": group["id"]}), "sendChatMessage")
        .await;
    let token = app.ok(&owner, TOKEN, json!({}), "issueChatToken").await;
    assert_eq!(token["provider"], "local");
    let mine = nodes(&app, &owner, MY_CHATS, &org, "chatSessions").await;
    assert_eq!(
        mine[0]["lastMessage"]["text"], "Hello from the front office",
        "newest activity first: {mine}"
    );
}

/// How many appointments and chats of the owner's the clinic has.
async fn count(app: &TestApp, owner: &str, org: &Value) -> (usize, usize) {
    let day = nodes(app, owner, DASHBOARD, org, "appointments").await;
    let chats = nodes(app, owner, MY_CHATS, org, "chatSessions").await;
    (
        day.as_array().expect("day").len(),
        chats.as_array().expect("chats").len(),
    )
}

#[tokio::test]
async fn a_restart_on_the_demo_database_seeds_nothing_more() {
    let app = TestApp::spawn_with(demo).await;
    let (owner, org) = owner_and_clinic(&app).await;
    assert_eq!(count(&app, &owner, &org).await, (3, 2));
    let app = app.restart(|_| {}).await;
    let owner = app
        .token_for_email(caregraph::services::demo::OWNER_EMAIL)
        .await;
    assert_eq!(count(&app, &owner, &org).await, (3, 2));
}

#[tokio::test]
async fn a_demo_start_with_the_chat_provider_down_seeds_everything_but_the_messages() {
    let fake = fakes::stream::start().await;
    fake.control().fail(503, "{}", usize::MAX);
    let app = TestApp::spawn_with(|v| {
        demo(v);
        v.extend(fake.vars());
        v.insert("CAREGRAPH_PROVIDER_RETRIES".into(), "0".into());
        // Nothing gives up or waits long: the provider comes back within the test.
        v.insert("CAREGRAPH_PROVIDER_BREAKER_THRESHOLD".into(), "1000".into());
        v.insert("CAREGRAPH_OUTBOX_MAX_ATTEMPTS".into(), "1000".into());
        v.insert("CAREGRAPH_OUTBOX_MAX_BACKOFF_SECONDS".into(), "1".into());
    })
    .await;
    let (owner, org) = owner_and_clinic(&app).await;
    let vars = json!({ "org": org });
    let day = nodes(&app, &owner, DASHBOARD, &org, "appointments").await;
    assert_eq!(
        each(&day, "meeting/state"),
        ["CLOSED", "OPEN", "NOT_YET_OPEN"]
    );
    assert_eq!(each(&day, "chat/status"), ["CLOSED", "ACTIVE", "PENDING"]);
    let claim = app.ok(&owner, CLAIM, vars.clone(), "caseByReference").await;
    assert!(claim["chat"]["status"].is_string(), "{claim}");
    let patients = app.ok(&owner, CARE_TEAMS, vars.clone(), "patients").await;
    assert!(
        patients.to_string().contains("Mochi's kidney care"),
        "{patients}"
    );
    // (Without lastMessage, which the provider would have to answer.)
    let chats = app
        .ok(
            &owner,
            "query($org: ID!) { chatSessions(orgId: $org) { totalCount } }",
            vars,
            "chatSessions",
        )
        .await;
    assert_eq!(chats["totalCount"], 2);

    // Back up, the outbox makes the channels, with no message the provider never took.
    fake.control().heal();
    settle(&app).await;
    let open = nodes(&app, &owner, OPEN_CHAT, &org, "appointments").await[0]["chat"].clone();
    assert_eq!(open["status"], "ACTIVE");
    assert!(
        open["messages"]["nodes"]
            .as_array()
            .expect("messages")
            .is_empty(),
        "{open}"
    );
}

#[tokio::test]
async fn a_demo_start_on_stream_seeds_the_same_day_with_its_messages_at_stream() {
    let fake = fakes::stream::start().await;
    let app = TestApp::spawn_with(|v| {
        demo(v);
        v.extend(fake.vars());
    })
    .await;
    let (owner, org) = owner_and_clinic(&app).await;
    let day = nodes(&app, &owner, DASHBOARD, &org, "appointments").await;
    assert_eq!(each(&day, "chat/status"), ["CLOSED", "ACTIVE", "PENDING"]);
    let open = nodes(&app, &owner, OPEN_CHAT, &org, "appointments").await[0]["chat"].clone();
    assert_eq!(each(&open["messages"]["nodes"], "text").len(), 3, "{open}");
    assert!(
        fake.control()
            .requests()
            .iter()
            .any(|r| r.path.ends_with("/message")),
        "posted at Stream"
    );
}
