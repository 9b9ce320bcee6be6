//! GraphiQL served from this process: the page and every script and style it loads come
//! from `hms` itself (vendored by `scripts/vendor-graphiql`), so it works on a hospital
//! network without internet access, and its Content-Security-Policy forbids loading
//! anything from elsewhere.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// Where the assets are served; the page names them relative to it.
pub const ASSETS_PATH: &str = "/graphiql/assets";

/// Only this origin: scripts and styles from `hms`, queries to `/graphql`. GraphiQL sets
/// inline styles on its elements (hence 'unsafe-inline' for styles only); no script is
/// inline or evaluated.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
     connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <meta name="robots" content="noindex">
    <title>HMS GraphiQL</title>
    <link rel="stylesheet" href="/graphiql/assets/graphiql.min.css">
    <link rel="stylesheet" href="/graphiql/assets/page.css">
  </head>
  <body>
    <div id="graphiql">Loading GraphiQL…</div>
    <script src="/graphiql/assets/react.production.min.js"></script>
    <script src="/graphiql/assets/react-dom.production.min.js"></script>
    <script src="/graphiql/assets/graphiql.min.js"></script>
    <script src="/graphiql/assets/start.js"></script>
  </body>
</html>
"#;

/// Headers typed into the editor (a bearer token) are kept for the tab only, never
/// written to the browser's storage.
const START: &str = r#"(function () {
  var root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(
    React.createElement(GraphiQL, {
      fetcher: GraphiQL.createFetcher({ url: "/graphql" }),
      defaultEditorToolsVisibility: true,
      shouldPersistHeaders: false,
    })
  );
})();
"#;

const PAGE_CSS: &str = "body { height: 100%; margin: 0; width: 100%; overflow: hidden; }\n\
     #graphiql { height: 100vh; }\n";

/// (name, content type, bytes): everything the page loads.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "graphiql.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/graphiql/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/graphiql/graphiql.min.css"),
    ),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/graphiql/react-dom.production.min.js"),
    ),
    (
        "start.js",
        "text/javascript; charset=utf-8",
        START.as_bytes(),
    ),
    ("page.css", "text/css; charset=utf-8", PAGE_CSS.as_bytes()),
];

/// The page, with a policy that lets it load nothing from another origin.
pub fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
        ],
        PAGE,
    )
        .into_response()
}

/// One asset by name. The versions are pinned in the binary, so a browser may keep them
/// for a day; an unknown name is 404.
pub fn asset(name: &str) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=86400"),
                ),
            ],
            *bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_assets_this_process_serves() {
        let loaded: Vec<&str> = PAGE
            .split(['"', '\''])
            .filter(|s| s.starts_with('/') || s.contains("://"))
            .collect();
        assert!(loaded.len() >= 6, "{loaded:?}");
        for url in loaded {
            let name = url
                .strip_prefix(ASSETS_PATH)
                .and_then(|n| n.strip_prefix('/'))
                .unwrap_or_else(|| panic!("{url} is not one of the served assets"));
            assert!(ASSETS.iter().any(|(n, _, _)| *n == name), "{name}");
        }
    }
}
