//! Who gets a group chat: create-or-get hands an existing group only to those who may read it,
//! read-only groups take messages from their owner and admins only, and two organisations can
//! both have a group of the same name.

use serde_json::{Value, json};

use crate::helpers::{TestApp, code, quick};

const GROUP: &str = "mutation($o: ID!, $i: CreateGroupChatInput!) { createGroupChat(orgId: $o, input: $i) { id channelId members { user { id } } recentMessages { text } } }";
const SEND: &str =
    "mutation($id: ID!, $t: String!) { sendChatMessage(sessionId: $id, text: $t) { id } }";

#[tokio::test]
async fn create_or_get_of_someone_elses_group_is_a_conflict_on_the_field_with_no_data() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("grpget").await;
    let group = app
        .ok(
            &c.vet.token,
            GROUP,
            json!({"o": c.org, "i": {"title": "Night shift", "memberIds": [c.owner.id]}}),
            "createGroupChat",
        )
        .await;
    app.ok(
        &c.vet.token,
        SEND,
        json!({"id": group["id"], "t": "handover notes"}),
        "sendChatMessage",
    )
    .await;
    // The technician is staff of the clinic but not in the group.
    for (input, field) in [
        (
            json!({"title": "Night shift", "memberIds": [c.vet.id]}),
            "input.title",
        ),
        (
            json!({"title": "Anything", "memberIds": [c.vet.id], "channelId": "night-shift"}),
            "input.channelId",
        ),
    ] {
        let body = app
            .gql(Some(&c.tech.token), GROUP, json!({"o": c.org, "i": input}))
            .await;
        assert_eq!(code(&body), "CONFLICT", "{body}");
        assert_eq!(body["errors"][0]["extensions"]["field"], field, "{body}");
        assert_eq!(body["data"], Value::Null, "no data of the group: {body}");
        assert!(!body.to_string().contains("handover notes"), "{body}");
    }
    // Its members and the clinic's owner still get it.
    for token in [&c.vet.token, &c.owner.token] {
        let again = app
            .ok(
                token,
                GROUP,
                json!({"o": c.org, "i": {"title": "Night shift", "memberIds": [c.tech.id]}}),
                "createGroupChat",
            )
            .await;
        assert_eq!(again["id"], group["id"]);
    }
}

#[tokio::test]
async fn a_read_only_group_takes_messages_from_its_owner_and_admins_only() {
    let app = TestApp::spawn_with(quick).await;
    let c = app.clinic("grpro").await;
    let group = app
        .ok(
            &c.vet.token,
            GROUP,
            json!({"o": c.org, "i": {"title": "Announcements", "readOnly": true,
                "memberIds": [c.tech.id, c.owner.id]}}),
            "createGroupChat",
        )
        .await;
    let refused = app
        .gql(
            Some(&c.tech.token),
            SEND,
            json!({"id": group["id"], "t": "me too"}),
        )
        .await;
    assert_eq!(code(&refused), "FORBIDDEN", "{refused}");
    for token in [&c.vet.token, &c.owner.token] {
        app.ok(
            token,
            SEND,
            json!({"id": group["id"], "t": "notice"}),
            "sendChatMessage",
        )
        .await;
    }
}

#[tokio::test]
async fn two_organisations_made_in_the_same_minute_both_get_their_announcements_group() {
    let app = TestApp::spawn_with(quick).await;
    let a = app.clinic("grpa").await;
    let b = app.clinic("grpb").await;
    let mut channels = Vec::new();
    for c in [&a, &b] {
        let group = app
            .ok(
                &c.owner.token,
                GROUP,
                json!({"o": c.org, "i": {"title": "Announcements", "memberIds": [c.vet.id]}}),
                "createGroupChat",
            )
            .await;
        channels.push(group["channelId"].as_str().expect("channel").to_owned());
    }
    assert_ne!(channels[0], channels[1]);
}
