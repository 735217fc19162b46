//! HTTP routing as Spin 4 does it (crates/routes, routefinder 0.5):
//! `/a/:name/b` matches one segment per `:name`, a trailing `/...` matches the
//! prefix and anything below it, trailing slashes are ignored. Among matching
//! routes the most specific wins, segment by segment from the left: exact
//! beats `:param` beats wildcard; on a tie the shorter route wins. A duplicate
//! route string replaces the earlier one (Spin logs it and carries on).

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Exact(String),
    Param(String),
    /// The trailing `/...`.
    Wildcard,
}

impl Segment {
    fn rank(&self) -> u8 {
        match self {
            Segment::Exact(_) => 3,
            Segment::Param(_) => 2,
            Segment::Wildcard => 1,
        }
    }
}

#[derive(Debug, Clone)]
struct Route {
    raw: String,
    segments: Vec<Segment>,
    component: String,
}

#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Route>,
}

/// A request's route: what the spin-* headers are made of.
#[derive(Debug, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    pub component: &'a str,
    /// The route as written in spin.toml.
    pub raw_route: &'a str,
    /// Named captures, in route order.
    pub captures: Vec<(String, String)>,
    /// What the trailing wildcard matched ("" without one).
    pub path_info: String,
}

impl Router {
    /// Builds the router; returns it with the routes that duplicates replaced.
    pub fn build<'a>(routes: impl IntoIterator<Item = (&'a str, &'a str)>) -> (Router, Vec<String>) {
        let mut router = Router::default();
        let mut replaced = Vec::new();
        for (raw, component) in routes {
            let route = Route { raw: raw.to_owned(), segments: parse(raw), component: component.to_owned() };
            if let Some(existing) = router.routes.iter_mut().find(|r| r.raw == route.raw) {
                replaced.push(format!("{} -> {}", existing.raw, existing.component));
                *existing = route;
            } else {
                router.routes.push(route);
            }
        }
        (router, replaced)
    }

    pub fn route(&self, path: &str) -> Option<RouteMatch<'_>> {
        let segments: Vec<&str> = split(path);
        self.routes
            .iter()
            .filter_map(|route| route.matches(path, &segments).map(|m| (route, m)))
            .max_by(|(a, _), (b, _)| more_specific(a, b))
            .map(|(_, m)| m)
    }
}

fn split(path: &str) -> Vec<&str> {
    let trimmed = path.trim_start_matches('/').trim_end_matches('/');
    if trimmed.is_empty() { Vec::new() } else { trimmed.split('/').collect() }
}

fn parse(raw: &str) -> Vec<Segment> {
    let (body, wildcard) = match raw.strip_suffix("/...").or_else(|| raw.strip_suffix("/*")) {
        Some(prefix) => (prefix, true),
        None if raw == "..." => ("", true),
        None => (raw, false),
    };
    let mut segments: Vec<Segment> = split(body)
        .into_iter()
        .map(|s| match s.strip_prefix(':') {
            Some(name) => Segment::Param(name.to_owned()),
            None => Segment::Exact(s.to_owned()),
        })
        .collect();
    if wildcard {
        segments.push(Segment::Wildcard);
    }
    segments
}

/// Ordering of two routes that both match: greater is more specific.
fn more_specific(a: &Route, b: &Route) -> std::cmp::Ordering {
    for (x, y) in a.segments.iter().zip(&b.segments) {
        match x.rank().cmp(&y.rank()) {
            std::cmp::Ordering::Equal => continue,
            other => return other,
        }
    }
    b.segments.len().cmp(&a.segments.len())
}

impl Route {
    fn matches<'r>(&'r self, path: &str, segments: &[&str]) -> Option<RouteMatch<'r>> {
        let wildcard = self.segments.last() == Some(&Segment::Wildcard);
        let fixed = self.segments.len() - usize::from(wildcard);
        if segments.len() < fixed || (!wildcard && segments.len() != fixed) {
            return None;
        }
        let mut captures = Vec::new();
        for (segment, actual) in self.segments[..fixed].iter().zip(segments) {
            match segment {
                Segment::Exact(want) if want == actual => {}
                Segment::Param(name) => captures.push((name.clone(), (*actual).to_owned())),
                _ => return None,
            }
        }
        let path_info = if wildcard { wildcard_tail(path, fixed) } else { String::new() };
        Some(RouteMatch { component: &self.component, raw_route: &self.raw, captures, path_info })
    }
}

/// The part of `path` after its first `fixed` segments, as Spin reports it:
/// `/foo/...` on `/foo` is "", on `/foo/` is "/", on `/foo/bar/` is "/bar/".
fn wildcard_tail(path: &str, fixed: usize) -> String {
    let mut rest = path;
    for _ in 0..fixed {
        rest = rest.trim_start_matches('/');
        rest = rest.find('/').map_or("", |i| &rest[i..]);
    }
    rest.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(routes: &[(&'static str, &'static str)]) -> Router {
        Router::build(routes.iter().copied()).0
    }

    fn component<'a>(r: &'a Router, path: &str) -> Option<&'a str> {
        r.route(path).map(|m| m.component)
    }

    #[test]
    fn the_apps_routes_go_where_spin_sends_them() {
        let r = router(&[
            ("/healthz", "healthz"),
            ("/v1/packets", "wrap"),
            ("/v1/packets/:id/grab", "grab"),
            ("/v1/packets/:id", "query"),
            ("/...", "fallback"),
        ]);
        assert_eq!(component(&r, "/v1/packets"), Some("wrap"));
        assert_eq!(component(&r, "/v1/packets/"), Some("wrap"), "trailing slash ignored");
        assert_eq!(component(&r, "/v1/packets/abc/grab"), Some("grab"));
        assert_eq!(component(&r, "/v1/packets/abc"), Some("query"));
        assert_eq!(component(&r, "/v1/packets/abc/nope"), Some("fallback"));
        assert_eq!(component(&r, "/"), Some("fallback"));
        let m = r.route("/v1/packets/abc/grab").unwrap();
        assert_eq!(m.captures, vec![("id".to_string(), "abc".to_string())]);
        assert_eq!(m.path_info, "");
    }

    #[test]
    fn precedence_is_decided_segment_by_segment() {
        let r = router(&[("/a/:x", "param"), ("/a/b/...", "wild"), ("/a/b", "exact")]);
        assert_eq!(component(&r, "/a/b"), Some("exact"));
        let r = router(&[("/a/:x", "param"), ("/a/b/...", "wild")]);
        assert_eq!(component(&r, "/a/b"), Some("wild"), "Spin's caveat: exact segment b beats :x");
        assert_eq!(component(&r, "/a/c"), Some("param"));
        let r = router(&[("/a/...", "short"), ("/a/b/...", "long")]);
        assert_eq!(component(&r, "/a/b/c"), Some("long"), "longest wildcard prefix wins");
        let r = router(&[("/a", "exact"), ("/a/...", "wild")]);
        assert_eq!(component(&r, "/a"), Some("exact"));
    }

    #[test]
    fn wildcards_report_path_info() {
        let r = router(&[("/foo/...", "f")]);
        assert_eq!(r.route("/foo").unwrap().path_info, "");
        assert_eq!(r.route("/foo/").unwrap().path_info, "/");
        assert_eq!(r.route("/foo/bar").unwrap().path_info, "/bar");
        assert_eq!(r.route("/foo/bar/").unwrap().path_info, "/bar/");
        assert_eq!(component(&r, "/foobar"), None);
    }

    #[test]
    fn a_duplicate_route_replaces_the_earlier_one() {
        let (r, replaced) = Router::build([("/x", "first"), ("/x", "second")]);
        assert_eq!(component(&r, "/x"), Some("second"));
        assert_eq!(replaced, vec!["/x -> first".to_string()]);
    }

    #[test]
    fn no_route_no_match() {
        let r = router(&[("/a", "a")]);
        assert_eq!(component(&r, "/b"), None);
    }
}
