//! `GET /openapi.json`: the OpenAPI 3.1 document of the API, checked in beside this file
//! (`src/http/openapi.json`). A test proves it lists exactly the routes of [`route_table`]
//! and that the README's API reference lists the same operations.

use serde_json::Value;

/// The document's text, served as is.
pub(super) const DOCUMENT: &str = include_str!("openapi.json");

/// The OpenAPI document, parsed.
pub fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("the checked-in openapi.json is valid JSON")
}

/// Every `(method, path)` the router serves, lower-case method, paths in the router's
/// (and OpenAPI's) `{param}` syntax.
pub fn route_table() -> Vec<(&'static str, &'static str)> {
    super::routes::paths()
}
