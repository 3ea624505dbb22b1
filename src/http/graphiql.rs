//! `/graphiql`: GraphiQL served from the binary (no CDN), wired to `/graphql` for queries and
//! subscriptions. A token in the URL fragment (`#token=…`) fills the Authorization header.

use axum::{
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
};

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>caregraph · GraphiQL</title>
<link rel="stylesheet" href="/graphiql/assets/graphiql.min.css">
<style>html, body, #graphiql { height: 100%; margin: 0; }</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<script src="/graphiql/assets/react.production.min.js"></script>
<script src="/graphiql/assets/react-dom.production.min.js"></script>
<script src="/graphiql/assets/graphql-ws.min.js"></script>
<script src="/graphiql/assets/graphiql.min.js"></script>
<script src="/graphiql/assets/init.js"></script>
</body>
</html>
"#;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
base-uri 'none'; form-action 'none'";

/// The GraphiQL page.
pub async fn page() -> Response {
    let mut response = Html(PAGE).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// (name, content type, gzipped?, bytes)
const ASSETS: &[(&str, &str, bool, &[u8])] = &[
    (
        "graphiql.min.css",
        "text/css; charset=utf-8",
        true,
        include_bytes!("../../assets/graphiql/graphiql.min.css.gz"),
    ),
    (
        "graphiql.min.js",
        "text/javascript; charset=utf-8",
        true,
        include_bytes!("../../assets/graphiql/graphiql.min.js.gz"),
    ),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        true,
        include_bytes!("../../assets/graphiql/react.production.min.js.gz"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        true,
        include_bytes!("../../assets/graphiql/react-dom.production.min.js.gz"),
    ),
    (
        "graphql-ws.min.js",
        "text/javascript; charset=utf-8",
        true,
        include_bytes!("../../assets/graphiql/graphql-ws.min.js.gz"),
    ),
    (
        "init.js",
        "text/javascript; charset=utf-8",
        false,
        include_bytes!("../../assets/graphiql/init.js"),
    ),
];

/// One of GraphiQL's static files.
pub async fn asset(Path(name): Path<String>) -> Response {
    let Some((_, content_type, gzipped, bytes)) = ASSETS.iter().find(|(n, ..)| *n == name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = (*bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if *gzipped {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    response
}
