//! The schema without a server, for client tooling: the introspection result GraphQL Codegen
//! and Apollo tooling read (`caregraph schema --json`), and validation of documents without
//! executing them (`caregraph documents check`).

use std::sync::Arc;

use async_graphql::{
    Response, Value,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute},
    parser::{parse_query, types::DocumentOperations},
};

use super::{
    AppSchema,
    engine::Gate,
    trusted::{Manifest, Problem},
};

/// The standard introspection query (the fields graphql-js `getIntrospectionQuery()` asks for
/// with its default options), which code generators run against a server.
pub const INTROSPECTION_QUERY: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives {
      name
      description
      locations
      args { ...InputValue }
    }
  }
}

fragment FullType on __Type {
  kind
  name
  description
  fields(includeDeprecated: true) {
    name
    description
    args { ...InputValue }
    type { ...TypeRef }
    isDeprecated
    deprecationReason
  }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) {
    name
    description
    isDeprecated
    deprecationReason
  }
  possibleTypes { ...TypeRef }
}

fragment InputValue on __InputValue {
  name
  description
  type { ...TypeRef }
  defaultValue
}

fragment TypeRef on __Type {
  kind
  name
  ofType {
    kind
    name
    ofType {
      kind
      name
      ofType {
        kind
        name
        ofType {
          kind
          name
          ofType {
            kind
            name
            ofType {
              kind
              name
              ofType {
                kind
                name
              }
            }
          }
        }
      }
    }
  }
}
"#;

/// Stops every request after validation: nothing is resolved, so a schema without services can
/// check documents.
pub struct ValidateOnly;

impl ExtensionFactory for ValidateOnly {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ValidateOnly)
    }
}

#[async_trait::async_trait]
impl Extension for ValidateOnly {
    async fn execute(
        &self,
        _ctx: &ExtensionContext<'_>,
        _operation_name: Option<&str>,
        _next: NextExecute<'_>,
    ) -> Response {
        Response::new(Value::Null)
    }
}

/// Validates one document against a [`ValidateOnly`] schema behind the server's gate (each
/// operation, when it holds several): the messages of what is wrong, empty when it would run.
pub async fn check_document(validator: &(AppSchema, Gate), document: &str) -> Vec<String> {
    let names: Vec<Option<String>> = match parse_query(document) {
        // The parser's message spans lines (a pointer under the text): one line per problem.
        Err(e) => {
            let message = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            return vec![format!("does not parse: {message}")];
        }
        Ok(doc) => match doc.operations {
            DocumentOperations::Single(_) => vec![None],
            DocumentOperations::Multiple(ops) => {
                let mut names: Vec<String> = ops.keys().map(ToString::to_string).collect();
                names.sort();
                names.into_iter().map(Some).collect()
            }
        },
    };
    let several = names.len() > 1;
    let mut messages = Vec::new();
    for name in names {
        let mut request = async_graphql::Request::new(document);
        if let Some(name) = &name {
            request = request.operation_name(name.as_str());
        }
        let (schema, gate) = validator;
        let response = gate
            .execute(
                schema,
                request,
                &crate::audit::AuditScope::default(),
                |request, _| (request, Default::default()),
            )
            .await;
        for error in response.errors {
            let message = error.message.replace('\n', " ");
            messages.push(match &name {
                Some(name) if several => format!("operation {name}: {message}"),
                _ => message,
            });
        }
    }
    messages
}

/// Every problem of a manifest: its ids and hashes, then each document against the schema.
pub async fn check_manifest(validator: &(AppSchema, Gate), manifest: &Manifest) -> Vec<Problem> {
    let mut problems = manifest.problems();
    for entry in &manifest.entries {
        if problems.len() >= super::trusted::MAX_PROBLEMS {
            break;
        }
        for message in check_document(validator, &entry.body).await {
            problems.push(Problem::entry(entry.id.as_str(), message));
        }
    }
    problems
}
