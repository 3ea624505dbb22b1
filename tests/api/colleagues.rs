//! Colleagues: the member list as a Relay connection, and typeahead search
//! ranking name prefixes first, treating the query as plain text.

use serde_json::{Value, json};

use crate::helpers::{TestApp, code, workers_asleep};

const SEARCH: &str = "query($o: ID!, $q: String!, $l: Int) { searchColleagues(orgId: $o, query: $q, limit: $l) { user { displayName email } role } }";
const LIST: &str = "query($o: ID!, $first: Int, $after: String, $all: Boolean) { colleagues(orgId: $o, first: $first, after: $after, includeInactive: $all) { totalCount pageInfo { hasNextPage hasPreviousPage endCursor } edges { cursor node { user { displayName } active } } } }";

/// Adds a member with these names through the API; returns the new user's id.
async fn add(
    app: &TestApp,
    token: &str,
    org: &str,
    given: &str,
    family: &str,
    email: &str,
) -> String {
    let body = app
        .gql(
            Some(token),
            "mutation($o: ID!, $i: AddOrganizationMemberInput!) { addOrganizationMember(orgId: $o, input: $i) { user { id } } }",
            json!({"o": org, "i": {"email": email, "givenName": given, "familyName": family, "role": "STAFF"}}),
        )
        .await;
    body["data"]["addOrganizationMember"]["user"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("list")
        .iter()
        .map(|c| c["user"]["displayName"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test]
async fn search_ranks_name_prefixes_before_other_matches_and_leaves_the_caller_out() {
    let app = TestApp::spawn().await;
    let (_, org, token) = app.owner("Search", "harriet.owner@example.org").await;
    add(&app, &token, &org, "Harry", "Potts", "hp@example.org").await;
    add(&app, &token, &org, "Sam", "Harwood", "sam@example.org").await;
    add(&app, &token, &org, "Charlotte", "Kim", "ck@example.org").await;
    add(&app, &token, &org, "Ann", "Lee", "annlee@harbour.example").await;
    add(&app, &token, &org, "Bob", "Stone", "bob@example.org").await;
    // The caller's own name starts with "har" too but never appears.
    let found = app
        .ok(
            &token,
            SEARCH,
            json!({"o": org, "q": "  HAR "}),
            "searchColleagues",
        )
        .await;
    assert_eq!(
        names(&found),
        vec!["Harry Potts", "Sam Harwood", "Ann Lee", "Charlotte Kim"],
        "name prefixes (by name) before substring and email matches (by name)"
    );
    let limited = app
        .ok(
            &token,
            SEARCH,
            json!({"o": org, "q": "har", "l": 1}),
            "searchColleagues",
        )
        .await;
    assert_eq!(names(&limited), vec!["Harry Potts"]);
    let accented = add(
        &app,
        &token,
        &org,
        "Ólafur",
        "Þórsson",
        "olafur@example.org",
    )
    .await;
    assert!(!accented.is_empty());
    let found = app
        .ok(
            &token,
            SEARCH,
            json!({"o": org, "q": "ÓLA"}),
            "searchColleagues",
        )
        .await;
    assert_eq!(
        names(&found),
        vec!["Ólafur Þórsson"],
        "case-insensitive beyond ASCII"
    );
}

#[tokio::test]
async fn search_input_is_data_never_a_pattern() {
    let app = TestApp::spawn().await;
    let (_, org, token) = app.owner("Patterns", "patterns@example.org").await;
    add(&app, &token, &org, "Percy", "100%", "percy@example.org").await;
    add(&app, &token, &org, "Una", "Under_score", "una@example.org").await;
    add(&app, &token, &org, "Bea", "Back\\slash", "bea@example.org").await;
    add(&app, &token, &org, "Dot", "Star", "dot@example.org").await;
    for (query, expected) in [
        ("0%", vec!["Percy 100%"]),
        ("r_s", vec!["Una Under_score"]),
        ("k\\s", vec!["Bea Back\\slash"]),
        (".*", vec![]),
        ("%%", vec![]),
        ("__", vec![]),
        ("' or 1=1 --", vec![]),
    ] {
        let found = app
            .ok(
                &token,
                SEARCH,
                json!({"o": org, "q": query}),
                "searchColleagues",
            )
            .await;
        assert_eq!(names(&found), expected, "query {query:?}");
    }
}

#[tokio::test]
async fn search_checks_its_arguments_and_skips_inactive_members() {
    let app = TestApp::spawn().await;
    let (_, org, token) = app.owner("Args", "args@example.org").await;
    let gone = add(&app, &token, &org, "Gina", "Gone", "gina@example.org").await;
    add(&app, &token, &org, "Gil", "Here", "gil@example.org").await;
    for (vars, field) in [
        (json!({"o": org, "q": " g "}), "query"),
        (json!({"o": org, "q": ""}), "query"),
        (json!({"o": org, "q": "gi", "l": 0}), "limit"),
        (json!({"o": org, "q": "gi", "l": 51}), "limit"),
    ] {
        let body = app.gql(Some(&token), SEARCH, vars).await;
        assert_eq!(code(&body), "BAD_USER_INPUT");
        assert_eq!(body["errors"][0]["extensions"]["field"], field);
    }
    app.ok(
        &token,
        "mutation($o: ID!, $u: ID!) { updateOrganizationMember(orgId: $o, userId: $u, input: {active: false}) { active } }",
        json!({"o": org, "u": gone}),
        "updateOrganizationMember",
    )
    .await;
    let found = app
        .ok(
            &token,
            SEARCH,
            json!({"o": org, "q": "gi"}),
            "searchColleagues",
        )
        .await;
    assert_eq!(names(&found), vec!["Gil Here"]);
}

#[tokio::test]
async fn only_members_search_or_list_colleagues() {
    let app = TestApp::spawn().await;
    let (_, org, _) = app.owner("Private", "private@example.org").await;
    let (_, _, outsider) = app.owner("Else", "else@example.org").await;
    for (query, vars) in [
        (SEARCH, json!({"o": org, "q": "pr"})),
        (LIST, json!({"o": org})),
    ] {
        assert_eq!(
            code(&app.gql(Some(&outsider), query, vars.clone()).await),
            "NOT_FOUND"
        );
        assert_eq!(code(&app.gql(None, query, vars).await), "UNAUTHENTICATED");
    }
}

#[tokio::test]
async fn colleagues_page_by_name_with_opaque_cursors_and_a_total() {
    let app = TestApp::spawn().await;
    let (_, org, token) = app.owner("Pages", "aaron.owner@example.org").await;
    for (given, family) in [("Erin", "E"), ("Cole", "C"), ("Dana", "D"), ("Beth", "B")] {
        add(
            &app,
            &token,
            &org,
            given,
            family,
            &format!("{}@example.org", given.to_lowercase()),
        )
        .await;
    }
    let leaving = add(&app, &token, &org, "Fay", "F", "fay@example.org").await;
    app.ok(
        &token,
        "mutation($o: ID!, $u: ID!) { updateOrganizationMember(orgId: $o, userId: $u, input: {active: false}) { active } }",
        json!({"o": org, "u": leaving}),
        "updateOrganizationMember",
    )
    .await;
    let first = app
        .ok(&token, LIST, json!({"o": org, "first": 2}), "colleagues")
        .await;
    assert_eq!(
        first["totalCount"], 5,
        "inactive members are left out by default"
    );
    assert_eq!(first["pageInfo"]["hasNextPage"], true);
    assert_eq!(first["pageInfo"]["hasPreviousPage"], false);
    let page_names = |page: &Value| -> Vec<String> {
        page["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| {
                e["node"]["user"]["displayName"]
                    .as_str()
                    .expect("name")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(page_names(&first), vec!["Beth B", "Cole C"]);
    let cursor = first["pageInfo"]["endCursor"]
        .as_str()
        .expect("cursor")
        .to_owned();
    assert!(
        !cursor.contains("Cole") && !cursor.contains("cole"),
        "cursors are opaque"
    );
    let second = app
        .ok(
            &token,
            LIST,
            json!({"o": org, "first": 10, "after": cursor}),
            "colleagues",
        )
        .await;
    assert_eq!(page_names(&second), vec!["Dana D", "Erin E", "Test Owner"]);
    assert_eq!(second["pageInfo"]["hasNextPage"], false);
    assert_eq!(second["pageInfo"]["hasPreviousPage"], true);
    let all = app
        .ok(&token, LIST, json!({"o": org, "all": true}), "colleagues")
        .await;
    assert_eq!(all["totalCount"], 6);

    for (vars, field) in [
        (json!({"o": org, "first": 0}), "first"),
        (json!({"o": org, "first": 101}), "first"),
        (json!({"o": org, "after": "not a cursor"}), "after"),
    ] {
        let body = app.gql(Some(&token), LIST, vars).await;
        assert_eq!(code(&body), "BAD_USER_INPUT");
        assert_eq!(body["errors"][0]["extensions"]["field"], field);
    }
}

/// Inserts `people` (given, family, email, active) as STAFF of `org` straight into the
/// database, as an import of a large practice would.
async fn seed(app: &TestApp, org: &str, people: &[(String, String, String, bool)]) {
    use caregraph::{
        db::{
            self,
            entities::membership,
            organizations::membership_row,
            users::{NewUser, user_row},
        },
        domain::{Email, OrgId, OrgRole},
    };
    use sea_orm::{ActiveValue::Set, EntityTrait};
    let org = OrgId::from_db(org).expect("org id");
    let conn = &app.state.services.db;
    for chunk in people.chunks(200) {
        let (mut users, mut members) = (Vec::new(), Vec::new());
        for (given, family, email, active) in chunk {
            let (row, user) = user_row(NewUser {
                email: Email::parse(email, "email").expect("email"),
                given_name: given.clone(),
                family_name: family.clone(),
                password_hash: None,
            });
            let mut member = membership_row(org, &user, OrgRole::Staff, None);
            member.active = Set(*active);
            users.push(row);
            members.push(member);
        }
        db::entities::user::Entity::insert_many(users)
            .exec(conn)
            .await
            .expect("users");
        membership::Entity::insert_many(members)
            .exec(conn)
            .await
            .expect("members");
    }
}

#[tokio::test]
async fn substring_search_in_a_large_practice_returns_the_first_matches_by_name_whether_matches_are_common_or_rare()
 {
    let app = TestApp::spawn_with(workers_asleep).await;
    let (_, org, token) = app.owner("Large", "owner@large.example").await;
    let given = [
        "Aaron", "Beth", "Carl", "Dana", "Emil", "Fay", "Gus", "Hana",
    ];
    let mut people = Vec::new();
    for i in 0..1_500 {
        let family = if i % 3 == 0 { "Barrow" } else { "Stone" };
        let name = given[i % given.len()];
        people.push((
            name.to_owned(),
            family.to_owned(),
            format!("m{i:04}@large.example"),
            true,
        ));
    }
    // An inactive match sorts first and must not appear; two rare matches sort last.
    people.push((
        "Aaa".into(),
        "Barrow".into(),
        "gone@large.example".into(),
        false,
    ));
    people.push((
        "Zoe".into(),
        "Quinn".into(),
        "zoe.qqx@large.example".into(),
        true,
    ));
    people.push((
        "Zack".into(),
        "Quill".into(),
        "qqx.zack@large.example".into(),
        true,
    ));
    seed(&app, &org, &people).await;

    let expected = |q: &str| {
        let mut rows: Vec<(String, String)> = people
            .iter()
            .filter(|(g, f, e, active)| {
                let text = format!("{g} {f} {g} {f} {e}").to_lowercase();
                *active && text.contains(q)
            })
            .map(|(g, f, _, _)| (format!("{g} {f}").to_lowercase(), format!("{g} {f}")))
            .collect();
        rows.sort();
        rows.into_iter().map(|(_, name)| name).collect::<Vec<_>>()
    };
    let stats = app.state.services.stats.clone();
    let mut statements = Vec::new();
    for (q, limit) in [("rro", 10), ("qqx", 10)] {
        let before = stats.statements();
        let found = app
            .ok(
                &token,
                SEARCH,
                json!({"o": org, "q": q, "l": limit}),
                "searchColleagues",
            )
            .await;
        statements.push(stats.statements() - before);
        let want: Vec<String> = expected(q).into_iter().take(limit).collect();
        assert!(!want.is_empty());
        assert_eq!(names(&found), want, "{q}");
    }
    assert_eq!(
        statements[0] + 1,
        statements[1],
        "a common substring is answered from the first members by name, a rare one needs the trigram lookup too"
    );
}
