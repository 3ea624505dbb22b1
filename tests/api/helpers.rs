//! Test harness: spawn the app with a fresh database, call GraphQL, mint tokens, seed people.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use caregraph::{
    app::App,
    config::{Config, Vars},
    domain::User,
    http::AppState,
};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

/// The HS256 secret the tests configure.
pub const SECRET: &str = "test-secret-0123456789abcdef0123456789";

/// App settings for chat tests: the outbox polls every 50 ms and retries after 20 ms; the chat
/// scheduler stays out of the way (the tests drive it).
pub fn quick(v: &mut HashMap<String, String>) {
    v.insert("CAREGRAPH_OUTBOX_POLL_MS".into(), "50".into());
    v.insert("CAREGRAPH_OUTBOX_BACKOFF_MS".into(), "20".into());
    v.insert("CAREGRAPH_CHAT_SCHEDULER_POLL_MS".into(), "600000".into());
}

/// App settings for tests that count records of repeated reads for another purpose (sealing,
/// retention, one record per request): every read is recorded, none coalesced.
pub fn every_read(v: &mut HashMap<String, String>) {
    v.insert("CAREGRAPH_AUDIT_READ_WINDOW_SECONDS".into(), "0".into());
}

/// Puts the background workers to sleep through a measurement: only the queries' statements
/// count.
pub fn workers_asleep(v: &mut HashMap<String, String>) {
    v.insert("CAREGRAPH_OUTBOX_POLL_MS".into(), "600000".into());
    v.insert("CAREGRAPH_CHAT_SCHEDULER_POLL_MS".into(), "600000".into());
}

/// Waits (up to 10 s) until the outbox has nothing pending.
pub async fn settle(app: &TestApp) {
    for _ in 0..400 {
        let counts = app.state.services.outbox.counts().await.expect("counts");
        if counts.pending == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the outbox did not drain");
}

/// An adapter's resilience in tests: `attempts` tries 5 to 50 ms apart, a 5 s timeout, and a
/// breaker that stays closed during a test.
pub fn quick_resilience(attempts: u32) -> caregraph::providers::http::Resilience {
    caregraph::providers::http::Resilience {
        timeout: Duration::from_secs(5),
        attempts,
        backoff: caregraph::backoff::Backoff::new(
            Duration::from_millis(5),
            Duration::from_millis(50),
        ),
        breaker_threshold: 1_000,
        breaker_cooldown: Duration::from_millis(10),
    }
}

/// The value of `name`, which an `#[ignore]`d test needs: run explicitly without it, the test
/// fails saying what to set (it never passes silently). `.ci/run` sets every such variable.
pub fn needs_env(name: &str, how: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!("this test needs {name}: {how} (.ci/run sets it)"),
    }
}

/// A database that exists for one test.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn new() -> Self {
        match std::env::var("CAREGRAPH_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            Some(admin) => {
                let name = format!("cg_test_{}", uuid::Uuid::new_v4().simple());
                let conn = Database::connect(&admin)
                    .await
                    .expect("connect to PostgreSQL");
                conn.execute_unprepared(&format!("CREATE DATABASE {name}"))
                    .await
                    .expect("create test database");
                let _ = conn.close().await;
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                Self {
                    url: format!("{base}/{name}"),
                    _dir: None,
                    pg: Some((admin.clone(), name)),
                }
            }
            None => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
                Self {
                    url,
                    _dir: Some(dir),
                    pg: None,
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            // Drop from a separate thread with its own runtime: Drop cannot await.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    if let Ok(conn) = Database::connect(&admin).await {
                        let _ = conn
                            .execute_unprepared(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .await;
                    }
                });
            })
            .join();
        }
    }
}

/// A running caregraph.
pub struct TestApp {
    pub addr: SocketAddr,
    pub state: AppState,
    pub http: reqwest::Client,
    /// The variables this app was configured with.
    pub vars: HashMap<String, String>,
    db: Option<TestDb>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The variables every test app starts from.
pub fn base_vars(db: &TestDb) -> HashMap<String, String> {
    let mut vars = HashMap::new();
    vars.insert("CAREGRAPH_BIND".into(), "127.0.0.1:0".into());
    vars.insert("CAREGRAPH_DATABASE_URL".into(), db.url.clone());
    vars.insert("CAREGRAPH_DATABASE_MAX_CONNECTIONS".into(), "5".into());
    vars.insert("CAREGRAPH_JWT_SECRET".into(), SECRET.into());
    vars.insert("CAREGRAPH_DEMO".into(), "false".into());
    vars.insert("CAREGRAPH_SHUTDOWN_GRACE_SECONDS".into(), "5".into());
    // With a test Redis, every app's events go through it (a channel of its own), so the
    // realtime tests prove the Redis path too.
    if let Some(redis) = std::env::var("CAREGRAPH_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    {
        vars.insert("CAREGRAPH_REDIS_URL".into(), redis);
        vars.insert(
            "CAREGRAPH_REDIS_CHANNEL".into(),
            format!("caregraph-test:{}", uuid::Uuid::new_v4().simple()),
        );
    }
    vars
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    pub async fn spawn_with(configure: impl FnOnce(&mut HashMap<String, String>)) -> Self {
        let db = TestDb::new().await;
        let mut vars = base_vars(&db);
        configure(&mut vars);
        Self::start(Some(db), vars, None).await
    }

    /// Spawns with a clock the test moves.
    pub async fn spawn_with_clock(
        clock: caregraph::clock::ManualClock,
        configure: impl FnOnce(&mut HashMap<String, String>),
    ) -> Self {
        let db = TestDb::new().await;
        let mut vars = base_vars(&db);
        configure(&mut vars);
        Self::start(Some(db), vars, Some(clock)).await
    }

    /// Stops this process and starts a new one on the same database (a restart), with the
    /// variables changed by `configure`.
    pub async fn restart(mut self, configure: impl FnOnce(&mut HashMap<String, String>)) -> Self {
        self.stop().await.expect("clean stop");
        let db = self.db.take().expect("database");
        let mut vars = self.vars.clone();
        configure(&mut vars);
        Self::start(Some(db), vars, None).await
    }

    /// A second process on this app's database with the same variables (a replica); the
    /// database lives as long as this app, so stop the replica first.
    pub async fn replica(&self) -> Self {
        Self::start(None, self.vars.clone(), None).await
    }

    async fn start(
        db: Option<TestDb>,
        vars: HashMap<String, String>,
        clock: Option<caregraph::clock::ManualClock>,
    ) -> Self {
        let lookup = vars.clone();
        let config =
            Config::from_vars(&Vars::new(move |k| lookup.get(k).cloned())).expect("config");
        let overrides = caregraph::app::Overrides {
            clock: clock.map(|c| std::sync::Arc::new(c) as caregraph::clock::SharedClock),
        };
        // Boxed: the build is a large future, and every test awaits it.
        let app = Box::pin(App::build_with(config, overrides))
            .await
            .expect("app builds");
        let addr = app.local_addr();
        let state = app.state.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(app.serve(async {
            let _ = rx.await;
        }));
        Self {
            addr,
            state,
            http: reqwest::Client::new(),
            vars,
            db,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/graphql", self.addr)
    }

    /// POSTs a GraphQL request and returns the JSON body (whatever the status).
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut req = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
            .await
            .expect("request")
            .json()
            .await
            .expect("json body")
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.server.take() {
            Some(handle) => tokio::time::timeout(Duration::from_secs(15), handle)
                .await
                .expect("server stops in time")
                .expect("server task"),
            None => Ok(()),
        }
    }

    /// Creates a user with an organisation they own; returns the user, org id and a token.
    pub async fn owner(&self, org_name: &str, email: &str) -> (User, String, String) {
        let (org, user) = self
            .state
            .services
            .accounts
            .bootstrap(
                org_name,
                email,
                "a long password 1".into(),
                Some("Test"),
                Some("Owner"),
            )
            .await
            .expect("bootstrap");
        let token = self.token(&user);
        (user, org.id.to_string(), token)
    }

    /// Adds a member to an organisation through the API, as `by`; returns the new user's id.
    pub async fn member(
        &self,
        by: &str,
        org_id: &str,
        email: &str,
        role: &str,
    ) -> (String, String) {
        let body = self
            .gql(
                Some(by),
                "mutation($org: ID!, $input: AddOrganizationMemberInput!) {
                   addOrganizationMember(orgId: $org, input: $input) { user { id } }
                 }",
                json!({ "org": org_id, "input": {
                    "email": email, "givenName": "Given", "familyName": email.split('@').next().unwrap_or("x"),
                    "role": role, "password": "a long password 1"
                }}),
            )
            .await;
        let id = body["data"]["addOrganizationMember"]["user"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("member added: {body}"))
            .to_owned();
        let token = self.token_for_email(email).await;
        (id, token)
    }

    pub fn token(&self, user: &User) -> String {
        self.state
            .services
            .accounts
            .mint(user.clone(), Duration::from_secs(3600))
            .expect("mint")
            .token
    }

    pub async fn token_for_email(&self, email: &str) -> String {
        self.state
            .services
            .accounts
            .token_for_email(email, Duration::from_secs(3600))
            .await
            .expect("token")
            .token
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.server.take() {
            h.abort();
        }
    }
}

/// The `extensions.code` of the first error.
pub fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

/// Signs arbitrary claims with HS256 and an arbitrary secret.
pub fn hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("sign")
}

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// A person in a fixture: user id and access token.
#[derive(Clone, Debug)]
pub struct Person {
    pub id: String,
    pub token: String,
}

/// A clinic with staff, a client and a patient, and a second organisation with its own staff.
#[derive(Clone, Debug)]
pub struct Clinic {
    /// The clinic's id.
    pub org: String,
    /// OWNER of the clinic.
    pub owner: Person,
    /// A PRACTITIONER of the clinic.
    pub vet: Person,
    /// STAFF of the clinic (a technician).
    pub tech: Person,
    /// A client: PRIMARY guardian of `patient`.
    pub client: Person,
    /// A co-guardian of `patient` without chat rights.
    pub co_guardian: Person,
    /// The patient (a dog).
    pub patient: String,
    /// Another organisation's id.
    pub other_org: String,
    /// The other organisation's OWNER.
    pub outsider: Person,
    /// A user who is nobody's guardian and nobody's colleague.
    pub stranger: Person,
}

impl TestApp {
    /// Builds a [`Clinic`]; `tag` keeps emails and slugs unique within a test.
    pub async fn clinic(&self, tag: &str) -> Clinic {
        let (owner_user, org, owner_token) = self
            .owner(&format!("{tag} Clinic"), &format!("owner@{tag}.example"))
            .await;
        let (vet_id, vet_token) = self
            .member(
                &owner_token,
                &org,
                &format!("vet@{tag}.example"),
                "PRACTITIONER",
            )
            .await;
        let (tech_id, tech_token) = self
            .member(&owner_token, &org, &format!("tech@{tag}.example"), "STAFF")
            .await;
        let body = self
            .gql(
                Some(&owner_token),
                "mutation($org: ID!, $input: CreatePatientInput!) { createPatient(orgId: $org, input: $input) { id guardians { user { id email } relationship } } }",
                json!({ "org": org, "input": {
                    "name": "Rex", "species": "Dog", "riskLevel": "MEDIUM",
                    "guardians": [
                        { "email": format!("client@{tag}.example"), "givenName": "Casey", "familyName": "Client", "relationship": "PRIMARY" },
                        { "email": format!("co@{tag}.example"), "givenName": "Cody", "familyName": "Co", "relationship": "CO_GUARDIAN", "canChat": false }
                    ]
                }}),
            )
            .await;
        let patient = body["data"]["createPatient"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("patient created: {body}"))
            .to_owned();
        let guardian_id = |email: &str| -> String {
            body["data"]["createPatient"]["guardians"]
                .as_array()
                .and_then(|gs| gs.iter().find(|g| g["user"]["email"] == email))
                .and_then(|g| g["user"]["id"].as_str())
                .expect("guardian present")
                .to_owned()
        };
        let client_email = format!("client@{tag}.example");
        let co_email = format!("co@{tag}.example");
        let client = Person {
            id: guardian_id(&client_email),
            token: self.token_for_email(&client_email).await,
        };
        let co_guardian = Person {
            id: guardian_id(&co_email),
            token: self.token_for_email(&co_email).await,
        };
        let (outsider_user, other_org, outsider_token) = self
            .owner(
                &format!("{tag} Other"),
                &format!("owner@other-{tag}.example"),
            )
            .await;
        let (stranger_user, _, stranger_token) = self
            .owner(
                &format!("{tag} Stranger"),
                &format!("stranger@{tag}.example"),
            )
            .await;
        // The stranger's own organisation is irrelevant; they hold no role in the clinic.
        Clinic {
            org,
            owner: Person {
                id: owner_user.id.to_string(),
                token: owner_token,
            },
            vet: Person {
                id: vet_id,
                token: vet_token,
            },
            tech: Person {
                id: tech_id,
                token: tech_token,
            },
            client,
            co_guardian,
            patient,
            other_org,
            outsider: Person {
                id: outsider_user.id.to_string(),
                token: outsider_token,
            },
            stranger: Person {
                id: stranger_user.id.to_string(),
                token: stranger_token,
            },
        }
    }

    /// Runs a query and returns `data.<field>`, panicking with the body on errors.
    pub async fn ok(&self, token: &str, query: &str, variables: Value, field: &str) -> Value {
        let body = self.gql(Some(token), query, variables).await;
        assert!(body.get("errors").is_none(), "{field}: {body}");
        body["data"][field].clone()
    }
}
