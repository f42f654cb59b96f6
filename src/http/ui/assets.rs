//! The UI's static files, embedded in the binary and served under a content-hashed name
//! (`/ui/assets/app.3f2a9c1e04.css`) that never changes meaning, so browsers cache them
//! for a year; the plain name (`/ui/assets/app.css`) is served with an ETag and revalidated.

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const FILES: &[Asset] = &[
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("assets/app.css"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("assets/app.js"),
    },
];

struct Hashed {
    hashed_name: String,
    etag: String,
}

fn hashed() -> &'static [Hashed] {
    static HASHED: OnceLock<Vec<Hashed>> = OnceLock::new();
    HASHED.get_or_init(|| {
        FILES
            .iter()
            .map(|a| {
                let hex = crate::run::raw::sha256_hex(a.bytes);
                let (stem, ext) = a.name.rsplit_once('.').unwrap_or((a.name, ""));
                Hashed {
                    hashed_name: format!("{stem}.{}.{ext}", &hex[..10]),
                    etag: format!("\"{}\"", &hex[..20]),
                }
            })
            .collect()
    })
}

/// The URL of the asset `name` (`app.css`), with its content hash.
pub fn url(name: &str) -> String {
    FILES
        .iter()
        .zip(hashed())
        .find(|(a, _)| a.name == name)
        .map(|(_, h)| format!("/ui/assets/{}", h.hashed_name))
        .unwrap_or_default()
}

/// Serves `/ui/assets/{file}`.
pub fn serve(file: &str, headers: &HeaderMap) -> Response {
    let Some((asset, h, immutable)) = FILES.iter().zip(hashed()).find_map(|(a, h)| {
        if h.hashed_name == file {
            Some((a, h, true))
        } else if a.name == file {
            Some((a, h, false))
        } else {
            None
        }
    }) else {
        return (StatusCode::NOT_FOUND, "no such asset").into_response();
    };
    let cache = if immutable {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut out = HeaderMap::new();
    out.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(&h.etag) {
        out.insert(header::ETAG, v);
    }
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == h.etag));
    if matches {
        return (StatusCode::NOT_MODIFIED, out).into_response();
    }
    out.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    (out, asset.bytes).into_response()
}
