//! The binary as a person runs it: the quick start on the embedded default (demo data and a
//! printed token that works), the schema file, bootstrap and token.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use serde_json::json;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_caregraph");

pub(crate) fn caregraph(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("CAREGRAPH_DATABASE_URL")
        .env_remove("CAREGRAPH_ENV")
        .env_remove("CAREGRAPH_DEMO")
        .env_remove("CAREGRAPH_JWT_SECRET")
        .env("RUST_LOG", "warn");
    cmd
}

pub(crate) struct Running(Child);

impl Running {
    /// Kills the process with SIGKILL (no shutdown of any kind) and reaps it.
    pub(crate) fn kill(&mut self) {
        self.0.kill().expect("SIGKILL");
        let _ = self.0.wait();
    }
}

impl Running {
    /// Sends SIGTERM (the orderly shutdown) and waits up to 30 s for the process to exit.
    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
        for _ in 0..300 {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("caregraph did not exit within 30 s of SIGTERM");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `caregraph` (serve) and returns the printed GraphiQL link once it appears.
fn start(dir: &std::path::Path) -> (Running, String) {
    serve(caregraph(dir))
}

/// Runs `cmd` as `caregraph` serving on a free port; returns the printed GraphiQL link.
pub(crate) fn serve(mut cmd: Command) -> (Running, String) {
    let mut child = cmd
        .env("CAREGRAPH_BIND", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("caregraph starts");
    let stdout = child.stdout.take().expect("stdout");
    let running = Running(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("/graphiql#token=") {
                let _ = tx.send(line.trim().to_owned());
            }
        }
    });
    let link = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the GraphiQL link is printed");
    (running, link)
}

#[tokio::test]
async fn the_quick_start_serves_graphiql_and_the_printed_token_works() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_running, link) = start(dir.path());
    let (base, token) = link.split_once("/graphiql#token=").expect("link shape");
    let http = reqwest::Client::new();
    let page = http
        .get(format!("{base}/graphiql"))
        .send()
        .await
        .expect("graphiql");
    assert_eq!(page.status(), 200);
    assert!(page.text().await.expect("html").contains("graphiql.min.js"));

    let body: serde_json::Value = http
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": "{ viewer { user { email } memberships { role organization { name } } } }"}))
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    assert_eq!(
        body["data"]["viewer"]["user"]["email"], "olivia.hart@riverside-vets.example",
        "{body}"
    );
    assert_eq!(body["data"]["viewer"]["memberships"][0]["role"], "OWNER");
    assert_eq!(
        body["data"]["viewer"]["memberships"][0]["organization"]["name"],
        "Riverside Veterinary Clinic"
    );
    assert!(
        dir.path().join("caregraph.db").exists(),
        "the SQLite file is created"
    );
}

#[tokio::test]
async fn a_restart_keeps_the_data_and_does_not_seed_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, _) = start(dir.path());
    drop(first);
    let (_second, link) = start(dir.path());
    let (base, token) = link.split_once("/graphiql#token=").expect("link");
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .bearer_auth(token)
        .json(&json!({"query": "{ viewer { memberships { organization { name } } } }"}))
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    assert_eq!(
        body["data"]["viewer"]["memberships"]
            .as_array()
            .expect("list")
            .len(),
        1,
        "{body}"
    );
}

#[test]
fn the_committed_schema_file_matches_the_code() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql exists");
    let generated = caregraph::graphql::sdl();
    assert!(
        committed.trim_end() == generated.trim_end(),
        "schema.graphql is stale: run `cargo run -- schema > schema.graphql`"
    );
    let printed = caregraph(std::path::Path::new("."))
        .arg("schema")
        .output()
        .expect("schema");
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim_end(),
        generated.trim_end()
    );
}

#[test]
fn bootstrap_then_token_prints_a_jwt_for_the_new_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = caregraph(dir.path())
        .args([
            "bootstrap",
            "--org",
            "Northside Clinic",
            "--email",
            "boss@northside.example",
            "--password",
            "correct horse battery",
        ])
        .env("CAREGRAPH_DEMO", "false")
        .output()
        .expect("bootstrap");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("Northside Clinic"));

    let out = caregraph(dir.path())
        .args(["token", "--email", "boss@northside.example", "--ttl", "30m"])
        .output()
        .expect("token");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let jwt = stdout.lines().last().expect("a line");
    assert_eq!(jwt.split('.').count(), 3, "{jwt}");

    let out = caregraph(dir.path())
        .args(["token", "--email", "nobody@northside.example"])
        .output()
        .expect("token");
    assert!(!out.status.success());
    let out = caregraph(dir.path())
        .args([
            "bootstrap",
            "--org",
            "Weak",
            "--email",
            "weak@northside.example",
            "--password",
            "short",
        ])
        .output()
        .expect("bootstrap");
    assert!(!out.status.success());
}

#[test]
fn production_refuses_to_start_without_a_real_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = caregraph(dir.path())
        .env("CAREGRAPH_ENV", "production")
        .env("CAREGRAPH_BIND", "127.0.0.1:0")
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("CAREGRAPH_JWT_SECRET"));
}

#[tokio::test]
async fn migrations_roll_back_and_forward_on_this_database() {
    use migrations::{Migrator, MigratorTrait};
    let db = crate::helpers::TestDb::new().await;
    let conn = sea_orm::Database::connect(&db.url).await.expect("connect");
    Migrator::up(&conn, None).await.expect("up");
    Migrator::down(&conn, None).await.expect("down to nothing");
    Migrator::up(&conn, None).await.expect("up again");
    assert!(
        Migrator::get_pending_migrations(&conn)
            .await
            .expect("pending")
            .is_empty()
    );
}

#[test]
fn schema_json_prints_the_introspection_result_whatever_the_environment() {
    // Production without a secret would not start: the schema command needs no configuration,
    // and introspection is on for it.
    let out = caregraph(std::path::Path::new("."))
        .args(["schema", "--json"])
        .env("CAREGRAPH_ENV", "production")
        .output()
        .expect("schema --json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let schema = &body["data"]["__schema"];
    assert_eq!(schema["queryType"]["name"], "Query", "{schema}");
    assert_eq!(schema["mutationType"]["name"], "Mutation");
    assert_eq!(schema["subscriptionType"]["name"], "Subscription");
    let types = schema["types"].as_array().expect("types");
    let query = types
        .iter()
        .find(|t| t["name"] == "Query")
        .expect("the Query type is listed");
    assert!(
        query["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .any(|f| f["name"] == "appointments"),
        "{query}"
    );
    assert!(body.get("errors").is_none());
}

/// `caregraph documents check FILE`, run where no `.env` is.
fn documents_check(file: &std::path::Path) -> std::process::Output {
    let dir = tempfile::tempdir().expect("tempdir");
    caregraph(dir.path())
        .args(["documents", "check"])
        .arg(file)
        .output()
        .expect("documents check")
}

#[test]
fn documents_check_passes_the_example_manifest() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/pms/persisted-documents.json");
    let out = documents_check(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        stdout.contains(
            "4 documents (GraphQL Codegen persisted documents) parse, validate and match their ids"
        ),
        "{stdout}"
    );
}

#[test]
fn documents_check_applies_the_configured_limits() {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/pms/persisted-documents.json");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = caregraph(dir.path())
        .args(["documents", "check"])
        .arg(&file)
        .env("CAREGRAPH_MAX_DEPTH", "2")
        .output()
        .expect("documents check");
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("sha256:") && l.to_lowercase().contains("depth")),
        "{stdout}"
    );
}

#[test]
fn documents_check_names_the_entry_with_a_bad_hash_or_an_invalid_field() {
    use sha2::Digest;
    let good = "query Ok { viewer { user { id } } }";
    let invalid = "query Bad { viewer { nope } }";
    let broken = "query Broken { viewer {";
    let hash = |d: &str| format!("sha256:{}", hex::encode(sha2::Sha256::digest(d.as_bytes())));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("persisted-documents.json");
    let manifest = json!({
        hash(good): good,
        "sha256:0000": good,
        hash(invalid): invalid,
        hash(broken): broken,
    });
    std::fs::write(&file, manifest.to_string()).expect("write");
    let out = documents_check(&file);
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("sha256:0000: the key is not the SHA-256 of its document"),
        "{stdout}"
    );
    assert!(
        lines.contains(
            &format!(
                "{}: Unknown field \"nope\" on type \"Viewer\".",
                hash(invalid)
            )
            .as_str()
        ),
        "{stdout}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&format!("{}: does not parse", hash(broken)))),
        "{stdout}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("3 problem(s) in 4 documents"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // An Apollo manifest: ids are not checked against hashes, a duplicate id is a problem.
    let apollo = json!({
        "format": "apollo-persisted-query-manifest", "version": 1,
        "operations": [
            {"id": "ok-v1", "name": "Ok", "type": "query", "body": good},
            {"id": "ok-v1", "name": "Ok", "type": "query", "body": good},
        ]
    });
    std::fs::write(&file, apollo.to_string()).expect("write");
    let out = documents_check(&file);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        "ok-v1: the id appears twice"
    );
}

#[test]
fn a_bad_trusted_documents_file_stops_the_binary_naming_the_variable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("documents.json");
    std::fs::write(&file, r#"{"sha256:abc": "{ __typename }"}"#).expect("write");
    let out = caregraph(dir.path())
        .env("CAREGRAPH_BIND", "127.0.0.1:0")
        .env("CAREGRAPH_TRUSTED_DOCUMENTS", &file)
        .output()
        .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CAREGRAPH_TRUSTED_DOCUMENTS"), "{stderr}");
    assert!(
        stderr.contains("sha256:abc: the key is not the SHA-256"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("caregraph.db").exists(),
        "the manifest is checked before the database is touched"
    );
}
