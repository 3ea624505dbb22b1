//! Trusted documents (persisted operation safelisting): a manifest of the operations the
//! clients were built with, loaded at start from `CAREGRAPH_TRUSTED_DOCUMENTS`.
//!
//! Two JSON formats are read, as clients emit them:
//!
//! - GraphQL Codegen's client preset (`persisted-documents.json`): `{ "<sha256 hex>": "<document>" }`;
//!   every key must be the SHA-256 hex digest of its document.
//! - Apollo's persisted query manifest: `{ "format": "apollo-persisted-query-manifest",
//!   "version": 1, "operations": [{ "id", "name", "type", "body" }] }`; ids are opaque strings
//!   (only their uniqueness is checked).
//!
//! Requests then name a document by id (`documentId`, or Apollo's
//! `extensions.persistedQuery.sha256Hash`); see `persisted.rs` for how requests are resolved.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    io::Read,
    path::Path,
    sync::Arc,
};

use serde_json::Value as Json;
use sha2::{Digest, Sha256};

/// The largest manifest file read (bounds the memory a manifest can take).
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// The most documents one manifest may hold.
pub const MAX_DOCUMENTS: usize = 20_000;

/// The longest id accepted.
const MAX_ID_BYTES: usize = 256;

/// The most problems reported at once (a broken manifest can have thousands).
pub const MAX_PROBLEMS: usize = 100;

/// Which client format a manifest is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// GraphQL Codegen client preset: `{ "<hash>": "<document>" }`.
    Codegen,
    /// Apollo persisted query manifest, version 1.
    Apollo,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Codegen => "GraphQL Codegen persisted documents",
            Self::Apollo => "Apollo persisted query manifest",
        })
    }
}

/// One document of a manifest.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The id clients send.
    pub id: String,
    /// The GraphQL document.
    pub body: String,
}

/// Something wrong with a manifest, naming the entry when there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The entry's id (or its position, `operations[3]`, when it has no usable id).
    pub entry: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    fn whole(message: impl Into<String>) -> Self {
        Self {
            entry: None,
            message: message.into(),
        }
    }

    /// A problem with one entry.
    pub fn entry(entry: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            entry: Some(entry.into()),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.entry {
            Some(entry) => write!(f, "{entry}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A parsed manifest, not yet verified.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The format it was written in.
    pub format: Format,
    /// Its documents, in file order.
    pub entries: Vec<Entry>,
}

/// A SHA-256 document id as stored: hex in lower case, without the `sha256:` prefix that the
/// GraphQL-over-HTTP persisted documents appendix (and GraphQL Codegen) put before it.
fn normalize_hash(id: &str) -> String {
    id.strip_prefix("sha256:")
        .unwrap_or(id)
        .to_ascii_lowercase()
}

/// The SHA-256 hex digest of a document, as clients compute ids.
pub fn sha256_hex(document: &str) -> String {
    hex::encode(Sha256::digest(document.as_bytes()))
}

impl Manifest {
    /// Reads a manifest file (at most [`MAX_MANIFEST_BYTES`]).
    pub fn read(path: &Path) -> Result<Self, Problem> {
        let file =
            std::fs::File::open(path).map_err(|e| Problem::whole(format!("cannot open: {e}")))?;
        let mut text = String::new();
        file.take(MAX_MANIFEST_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| Problem::whole(format!("cannot read: {e}")))?;
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(Problem::whole(format!(
                "larger than {} MiB",
                MAX_MANIFEST_BYTES / (1024 * 1024)
            )));
        }
        Self::parse(&text)
    }

    /// Parses either format; a shape the formats do not allow is a problem.
    pub fn parse(text: &str) -> Result<Self, Problem> {
        let json: Json = serde_json::from_str(text)
            .map_err(|e| Problem::whole(format!("not valid JSON: {e}")))?;
        let Json::Object(map) = json else {
            return Err(Problem::whole(
                "expected a JSON object (GraphQL Codegen persisted documents or an Apollo persisted query manifest)",
            ));
        };
        if map.contains_key("format") || map.contains_key("operations") {
            return Self::finish(Format::Apollo, Self::apollo(&map)?);
        }
        let mut entries = Vec::with_capacity(map.len().min(MAX_DOCUMENTS));
        for (id, body) in &map {
            let Json::String(body) = body else {
                return Err(Problem::entry(id.as_str(), "the document must be a string"));
            };
            entries.push(Entry {
                id: id.clone(),
                body: body.clone(),
            });
        }
        Self::finish(Format::Codegen, entries)
    }

    fn apollo(map: &serde_json::Map<String, Json>) -> Result<Vec<Entry>, Problem> {
        if map.get("format").and_then(Json::as_str) != Some("apollo-persisted-query-manifest") {
            return Err(Problem::whole(
                "`format` must be \"apollo-persisted-query-manifest\"",
            ));
        }
        if map.get("version").and_then(Json::as_u64) != Some(1) {
            return Err(Problem::whole(
                "only `version` 1 of the Apollo manifest is supported",
            ));
        }
        let Some(Json::Array(operations)) = map.get("operations") else {
            return Err(Problem::whole("`operations` must be an array"));
        };
        let mut entries = Vec::with_capacity(operations.len().min(MAX_DOCUMENTS));
        for (i, op) in operations.iter().enumerate() {
            let at = format!("operations[{i}]");
            let (Some(id), Some(body)) = (
                op.get("id").and_then(Json::as_str),
                op.get("body").and_then(Json::as_str),
            ) else {
                return Err(Problem::entry(at, "needs string `id` and `body`"));
            };
            if let Some(kind) = op.get("type")
                && !matches!(kind.as_str(), Some("query" | "mutation" | "subscription"))
            {
                return Err(Problem::entry(
                    id,
                    "`type` must be query, mutation or subscription",
                ));
            }
            entries.push(Entry {
                id: id.to_owned(),
                body: body.to_owned(),
            });
        }
        Ok(entries)
    }

    fn finish(format: Format, entries: Vec<Entry>) -> Result<Self, Problem> {
        if entries.len() > MAX_DOCUMENTS {
            return Err(Problem::whole(format!(
                "{} documents; at most {MAX_DOCUMENTS} are accepted",
                entries.len()
            )));
        }
        Ok(Self { format, entries })
    }

    /// Checks ids and hashes (not the documents against the schema): Codegen keys must be the
    /// SHA-256 of their document, ids unique, non-empty and short, documents non-empty.
    pub fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        for entry in &self.entries {
            if problems.len() >= MAX_PROBLEMS {
                break;
            }
            if entry.id.is_empty() || entry.id.len() > MAX_ID_BYTES {
                problems.push(Problem::entry(
                    entry.id.as_str(),
                    format!("an id must have 1 to {MAX_ID_BYTES} bytes"),
                ));
                continue;
            }
            if !seen.insert(entry.id.as_str()) {
                problems.push(Problem::entry(entry.id.as_str(), "the id appears twice"));
                continue;
            }
            if entry.body.trim().is_empty() {
                problems.push(Problem::entry(entry.id.as_str(), "the document is empty"));
                continue;
            }
            if self.format == Format::Codegen {
                let digest = sha256_hex(&entry.body);
                if normalize_hash(&entry.id) != digest {
                    problems.push(Problem::entry(
                        entry.id.as_str(),
                        format!(
                            "the key is not the SHA-256 of its document (that is sha256:{digest}; codegen's hashAlgorithm must be sha256)"
                        ),
                    ));
                }
            }
        }
        problems
    }
}

/// The trusted documents, by id and by text.
#[derive(Debug, Default)]
pub struct TrustedDocuments {
    by_id: HashMap<String, Arc<str>>,
    bodies: HashSet<Arc<str>>,
}

impl TrustedDocuments {
    /// Reads and verifies a manifest file; the error lists what is wrong (entry ids included).
    pub fn load(path: &Path) -> Result<Self, String> {
        let manifest = Manifest::read(path).map_err(|p| p.to_string())?;
        Self::from_manifest(&manifest)
    }

    /// Verifies a parsed manifest (ids and hashes) and indexes it.
    pub fn from_manifest(manifest: &Manifest) -> Result<Self, String> {
        let problems = manifest.problems();
        if !problems.is_empty() {
            let shown: Vec<String> = problems.iter().take(5).map(ToString::to_string).collect();
            let more = problems.len().saturating_sub(shown.len());
            let mut message = shown.join("; ");
            if more > 0 {
                message.push_str(&format!(
                    "; and {more} more (`caregraph documents check` lists them)"
                ));
            }
            return Err(message);
        }
        let mut trusted = Self::default();
        for entry in &manifest.entries {
            let body: Arc<str> = match trusted.bodies.get(entry.body.as_str()) {
                Some(existing) => existing.clone(),
                None => Arc::from(entry.body.as_str()),
            };
            trusted.bodies.insert(body.clone());
            // Codegen ids are digests: clients may send them with or without `sha256:`, in
            // either case (Apollo's `sha256Hash` is bare hex).
            let id = match manifest.format {
                Format::Codegen => normalize_hash(&entry.id),
                Format::Apollo => entry.id.clone(),
            };
            trusted.by_id.insert(id, body);
        }
        Ok(trusted)
    }

    /// The document with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<str>> {
        self.by_id
            .get(id)
            .or_else(|| self.by_id.get(&normalize_hash(id)))
    }

    /// Whether this exact text is one of the documents.
    pub fn contains_document(&self, document: &str) -> bool {
        self.bodies.contains(document)
    }

    /// How many ids the manifest holds.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the manifest holds no document.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "query Q { __typename }";

    #[test]
    fn a_codegen_manifest_with_the_right_hash_loads_and_finds_by_id_and_text() {
        let text = serde_json::json!({ sha256_hex(DOC): DOC }).to_string();
        let manifest = Manifest::parse(&text).expect("parses");
        assert_eq!(manifest.format, Format::Codegen);
        let trusted = TrustedDocuments::from_manifest(&manifest).expect("verifies");
        assert_eq!(trusted.get(&sha256_hex(DOC)).map(|d| &**d), Some(DOC));
        assert_eq!(
            trusted
                .get(&sha256_hex(DOC).to_ascii_uppercase())
                .map(|d| &**d),
            Some(DOC)
        );
        assert_eq!(
            trusted
                .get(&format!("sha256:{}", sha256_hex(DOC)))
                .map(|d| &**d),
            Some(DOC)
        );
        assert!(trusted.get("sha256:0123").is_none());
        assert!(trusted.contains_document(DOC));
        assert!(!trusted.contains_document("query Q { __typename  }"));
    }

    #[test]
    fn codegen_keys_may_carry_the_sha256_prefix() {
        let text = serde_json::json!({ format!("sha256:{}", sha256_hex(DOC)): DOC }).to_string();
        let manifest = Manifest::parse(&text).expect("parses");
        assert!(manifest.problems().is_empty());
        let trusted = TrustedDocuments::from_manifest(&manifest).expect("verifies");
        assert_eq!(trusted.get(&sha256_hex(DOC)).map(|d| &**d), Some(DOC));
    }

    #[test]
    fn a_codegen_key_that_is_not_the_hash_names_the_entry() {
        let text = serde_json::json!({ "abc123": DOC }).to_string();
        let manifest = Manifest::parse(&text).expect("parses");
        let err = TrustedDocuments::from_manifest(&manifest).expect_err("mismatch");
        assert!(
            err.starts_with("abc123: the key is not the SHA-256"),
            "{err}"
        );
    }

    #[test]
    fn apollo_ids_are_opaque_but_unique() {
        let ok = serde_json::json!({
            "format": "apollo-persisted-query-manifest", "version": 1,
            "operations": [{ "id": "dashboard-v1", "name": "Q", "type": "query", "body": DOC }]
        });
        let manifest = Manifest::parse(&ok.to_string()).expect("parses");
        assert_eq!(manifest.format, Format::Apollo);
        let trusted = TrustedDocuments::from_manifest(&manifest).expect("any id");
        assert_eq!(trusted.get("dashboard-v1").map(|d| &**d), Some(DOC));

        let twice = serde_json::json!({
            "format": "apollo-persisted-query-manifest", "version": 1,
            "operations": [
                { "id": "x", "name": "Q", "type": "query", "body": DOC },
                { "id": "x", "name": "R", "type": "query", "body": "{ __typename }" }
            ]
        });
        let manifest = Manifest::parse(&twice.to_string()).expect("parses");
        assert_eq!(
            manifest.problems(),
            vec![Problem::entry("x", "the id appears twice")]
        );
    }

    #[test]
    fn a_manifest_over_the_document_or_size_limit_is_refused() {
        let many: serde_json::Map<String, Json> = (0..=MAX_DOCUMENTS)
            .map(|i| {
                let doc = format!("query Q{i} {{ __typename }}");
                (sha256_hex(&doc), Json::String(doc))
            })
            .collect();
        let err = Manifest::parse(&Json::Object(many).to_string()).expect_err("too many");
        assert!(err.message.contains("at most 20000"), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.json");
        let filler = "x".repeat(usize::try_from(MAX_MANIFEST_BYTES).expect("fits"));
        std::fs::write(&path, format!("{{\"a\": \"{filler}\"}}")).expect("write");
        let err = Manifest::read(&path).expect_err("too large");
        assert_eq!(err.message, "larger than 16 MiB");
    }

    #[test]
    fn shapes_the_formats_do_not_allow_are_refused() {
        for bad in [
            "[]",
            "not json",
            r#"{"abc": 1}"#,
            r#"{"format": "other", "version": 1, "operations": []}"#,
            r#"{"format": "apollo-persisted-query-manifest", "version": 2, "operations": []}"#,
            r#"{"format": "apollo-persisted-query-manifest", "version": 1, "operations": [{"id": "a"}]}"#,
        ] {
            assert!(Manifest::parse(bad).is_err(), "{bad}");
        }
    }
}
