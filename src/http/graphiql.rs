//! `/graphiql`: GraphiQL served from the binary (no CDN), wired to `/graphql` for queries and
//! subscriptions. A token in the URL fragment (`#token=…`) fills the Authorization header.

use axum::{
    extract::Path,
    http::{HeaderName, HeaderValue, StatusCode, header},
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
    with_headers(
        Html(PAGE).into_response(),
        &[
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
    )
}

/// Sets fixed headers on a response.
pub(super) fn with_headers(
    mut response: Response,
    fixed: &[(HeaderName, &'static str)],
) -> Response {
    let headers = response.headers_mut();
    for (name, value) in fixed {
        headers.insert(name.clone(), HeaderValue::from_static(value));
    }
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
    let response = with_headers(
        (*bytes).into_response(),
        &[
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
    );
    if *gzipped {
        return with_headers(response, &[(header::CONTENT_ENCODING, "gzip")]);
    }
    response
}
