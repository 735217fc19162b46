//! The headers Spin adds to every request it routes to a component
//! (`spin-path-info`, `spin-full-url`, the route and its captures, the
//! client's address), and the absolute URI a component expects.

use std::net::SocketAddr;

/// Adds the headers Spin adds (crates/trigger-http/src/headers.rs) and fills in
/// scheme and authority, which a server-side request URI lacks. Client-sent
/// `spin-*` headers are dropped so a client cannot forge them.
pub(super) fn with_spin_headers<B>(
    req: hyper::Request<B>,
    route: &crate::router::RouteMatch<'_>,
    client: SocketAddr,
) -> hyper::Request<B> {
    let (mut parts, body) = req.into_parts();
    let host = parts.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost").to_owned();
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".into());
    let spin_names: Vec<http::HeaderName> =
        parts.headers.keys().filter(|k| k.as_str().starts_with("spin-")).cloned().collect();
    for name in spin_names {
        parts.headers.remove(name);
    }
    let raw = route.raw_route;
    let mut add = |name: String, value: &str| {
        if let (Ok(name), Ok(value)) = (http::HeaderName::try_from(name), http::HeaderValue::from_str(value)) {
            parts.headers.append(name, value);
        }
    };
    add("spin-path-info".into(), &route.path_info);
    add("spin-full-url".into(), &format!("http://{host}{path_and_query}"));
    add("spin-matched-route".into(), if raw == "/" { "" } else { raw.trim_end_matches('/') });
    add("spin-base-path".into(), "/");
    add("spin-raw-component-route".into(), raw);
    add("spin-component-route".into(), raw.strip_suffix("/...").unwrap_or(raw));
    add("spin-client-addr".into(), &client.to_string());
    for (name, value) in &route.captures {
        add(format!("spin-path-match-{}", name.to_ascii_lowercase().replace('_', "-")), value);
    }
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(http::uri::Scheme::HTTP);
    uri.authority = host.parse().ok();
    uri.path_and_query = path_and_query.parse().ok();
    if let Ok(full) = http::Uri::from_parts(uri) {
        parts.uri = full;
    }
    hyper::Request::from_parts(parts, body)
}
