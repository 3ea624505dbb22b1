//! `/accept-invitation`: the page an invitation's `acceptUrl` opens. It reads the token from
//! the URL fragment (never sent to a server), asks for a password and calls `acceptInvitation`
//! on `/graphql`; a web app may serve its own page at this path instead (behind the same
//! `CAREGRAPH_PUBLIC_URL`).

use axum::{
    http::{HeaderValue, header},
    response::{Html, IntoResponse, Response},
};

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>caregraph · Accept your invitation</title>
<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:4rem auto;padding:0 1rem}
label,input,button{display:block;width:100%;margin:.5rem 0}input,button{padding:.5rem;font-size:1rem}</style>
</head>
<body>
<h1>Accept your invitation</h1>
<form id="accept">
<label for="password">Choose a password (at least 10 characters), or enter the password of your existing account</label>
<input id="password" type="password" autocomplete="new-password" minlength="10" required>
<button type="submit">Accept</button>
</form>
<p id="result" role="status"></p>
<script src="/accept-invitation/accept.js"></script>
</body>
</html>
"#;

const SCRIPT: &str = r#""use strict";
(function () {
  var token = new URLSearchParams(location.hash.slice(1)).get("token");
  history.replaceState(null, "", location.pathname);
  var result = document.getElementById("result");
  if (!token) { result.textContent = "This link has no invitation token."; return; }
  document.getElementById("accept").addEventListener("submit", function (e) {
    e.preventDefault();
    result.textContent = "…";
    fetch("/graphql", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        query: "mutation Accept($token: String!, $password: String!) { acceptInvitation(token: $token, password: $password) { user { displayName } } }",
        variables: { token: token, password: document.getElementById("password").value }
      })
    }).then(function (r) { return r.json(); }).then(function (body) {
      if (body.errors && body.errors.length) { result.textContent = body.errors[0].message; return; }
      result.textContent = "Welcome, " + body.data.acceptInvitation.user.displayName + ". You can now sign in in the app.";
      document.getElementById("accept").remove();
    }, function () { result.textContent = "The server could not be reached; try again."; });
  });
})();
"#;

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn secured(response: Response) -> Response {
    super::graphiql::with_headers(
        response,
        &[
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-store"),
        ],
    )
}

/// The accept page.
pub async fn page() -> Response {
    secured(Html(PAGE).into_response())
}

/// The accept page's script (served apart: the page's CSP allows no inline script).
pub async fn script() -> Response {
    secured(
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            )],
            SCRIPT,
        )
            .into_response(),
    )
}
