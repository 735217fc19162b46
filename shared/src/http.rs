//! The contract's HTTP surface, framework-free: a component hands over the
//! method, path, query, headers and body, and gets back status, headers and
//! body. Authentication, decoding, the operation and the error envelope all
//! happen here, so each Wasm component stays a thin adapter and the whole
//! contract is testable natively.

use crate::api::{self, MAX_BODY_BYTES};
use crate::auth;
use crate::config::Config;
use crate::env::Env;
use crate::error::Error;
use crate::id::PacketId;
use crate::ops::{PlacementCache, Service};
use crate::store::Store;
use crate::time::Timestamp;
use serde::Serialize;

/// How long a demo sign-in lasts: an afternoon of trying the page.
pub const DEMO_TOKEN_SECONDS: i64 = 12 * 3600;

/// The answer of `POST /v1/demo/sign-in`.
#[derive(Serialize)]
struct DemoToken {
    user: String,
    token: String,
    expires_at: String,
}

/// The endpoints of the contract (healthz has its own store-less component).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Wrap,
    Payment,
    Grab,
    Open,
    Query,
    Sent,
    Received,
    Wallet,
    Expire,
    Settle,
    Reconcile,
    Purge,
    /// Which SETs take new packets, and every drain and restore.
    Placement,
    /// Drains or restores a SET.
    SetChange,
    /// Demo mode only: a short-lived token for any name.
    DemoSignIn,
    /// Demo mode only: the sender pays their own packet, no provider asked.
    DemoPayment,
}

impl Endpoint {
    pub const ALL: [Endpoint; 16] = [
        Endpoint::Wrap,
        Endpoint::Payment,
        Endpoint::Grab,
        Endpoint::Open,
        Endpoint::Query,
        Endpoint::Sent,
        Endpoint::Received,
        Endpoint::Wallet,
        Endpoint::Expire,
        Endpoint::Settle,
        Endpoint::Reconcile,
        Endpoint::Purge,
        Endpoint::Placement,
        Endpoint::SetChange,
        Endpoint::DemoSignIn,
        Endpoint::DemoPayment,
    ];

    /// This endpoint's bit in a component's endpoint set (see `serve`).
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// Whether this is one of the demo page's endpoints, which exist only in
    /// demo mode.
    pub fn is_demo(self) -> bool {
        matches!(self, Endpoint::DemoSignIn | Endpoint::DemoPayment)
    }

    /// Whether the endpoint only reads what users may see, so a replica may
    /// answer it when the primary store fails (never a money step).
    pub fn only_reads(self) -> bool {
        matches!(self, Endpoint::Query | Endpoint::Sent | Endpoint::Received | Endpoint::Wallet)
    }

    /// The secret variable that checks this endpoint's callers.
    pub fn secret(self) -> &'static str {
        match self {
            Endpoint::Payment => "payment_secret",
            Endpoint::Expire
            | Endpoint::Settle
            | Endpoint::Reconcile
            | Endpoint::Purge
            | Endpoint::Placement
            | Endpoint::SetChange => "admin_token",
            _ => "auth_secret",
        }
    }

    pub fn method(self) -> &'static str {
        match self {
            Endpoint::Query
            | Endpoint::Sent
            | Endpoint::Received
            | Endpoint::Wallet
            | Endpoint::Reconcile
            | Endpoint::Placement => "GET",
            _ => "POST",
        }
    }

    /// Path segments after `/v1`; `{id}` matches a packet id.
    fn pattern(self) -> &'static [&'static str] {
        match self {
            Endpoint::Wrap => &["packets"],
            Endpoint::Payment => &["packets", "{id}", "payment"],
            Endpoint::Grab => &["packets", "{id}", "grab"],
            Endpoint::Open => &["packets", "{id}", "open"],
            Endpoint::Query => &["packets", "{id}"],
            Endpoint::Sent => &["users", "me", "sent"],
            Endpoint::Received => &["users", "me", "received"],
            Endpoint::Wallet => &["users", "me", "wallet"],
            Endpoint::Expire => &["admin", "expire"],
            Endpoint::Settle => &["admin", "settle"],
            Endpoint::Reconcile => &["admin", "reconcile"],
            Endpoint::Purge => &["admin", "purge"],
            Endpoint::Placement | Endpoint::SetChange => &["admin", "sets"],
            Endpoint::DemoSignIn => &["demo", "sign-in"],
            Endpoint::DemoPayment => &["demo", "payment"],
        }
    }

    /// Whether `path` is this endpoint's; returns the `{id}` segment if any.
    fn matches(self, path: &str) -> Option<Option<&str>> {
        let rest = path.strip_prefix("/v1/")?.trim_end_matches('/');
        let segments: Vec<&str> = rest.split('/').collect();
        let pattern = self.pattern();
        if segments.len() != pattern.len() {
            return None;
        }
        let mut id = None;
        for (segment, want) in segments.iter().zip(pattern) {
            match *want {
                "{id}" if !segment.is_empty() => id = Some(*segment),
                literal if literal == *segment => {}
                _ => return None,
            }
        }
        Some(id)
    }
}

pub struct Request<'a> {
    pub method: &'a str,
    /// The path without the query string.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// Header lookup by lower-case name.
    pub header: &'a dyn Fn(&str) -> Option<String>,
    pub body: &'a [u8],
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json<T: Serialize>(status: u16, value: &T) -> Response {
        Response {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: crate::json::to_vec(value),
        }
    }

    /// This JSON answer marked `"degraded": true`: read from a replica,
    /// which may lag the primary.
    pub fn degraded(mut self) -> Response {
        if let Ok(serde_json::Value::Object(mut body)) = serde_json::from_slice(&self.body) {
            body.insert("degraded".into(), serde_json::Value::Bool(true));
            self.body = crate::json::to_vec(&body);
        }
        self
    }

    pub fn error(e: &Error) -> Response {
        let mut response = Response::json(e.status(), &e.body());
        if let Some(seconds) = e.retry_after() {
            response.headers.push(("retry-after", seconds.to_string()));
        }
        response
    }
}

/// Serves `req` if it is one of the endpoints in `ENDPOINTS` (a set of
/// `Endpoint::bit`s: the routes this component owns): 405 for a known path
/// with the wrong method, 404 for anything else. The set is a const generic so
/// each component compiles only the operations it serves.
/// `placement` is the instance's copy of the open SETs (wrap reads it).
/// `replica`, where there is one, answers the user-facing reads (query and
/// the user records) when `store` fails, marked `"degraded": true`; nothing
/// that moves money or decides about it ever reads it.
pub fn serve<const ENDPOINTS: u32, S: Store>(
    store: &S,
    replica: Option<&S>,
    config: Result<&Config, Error>,
    env: Env,
    placement: &PlacementCache,
    req: &Request,
) -> Response {
    let mut method_mismatch = false;
    for endpoint in Endpoint::ALL {
        if ENDPOINTS & endpoint.bit() == 0 {
            continue;
        }
        let Some(id) = endpoint.matches(req.path) else { continue };
        // With demo mode off a demo path is unknown: 404 whatever the method.
        if endpoint.is_demo() && matches!(config, Ok(c) if !c.demo_mode) {
            continue;
        }
        if !req.method.eq_ignore_ascii_case(endpoint.method()) {
            method_mismatch = true;
            continue;
        }
        let result = config.and_then(|config| {
            let mut svc = Service::new(store, config, env).with_placement_cache(placement);
            match (handle::<ENDPOINTS, S>(endpoint, id, &mut svc, req), replica) {
                (Err(Error::Unavailable(why)), Some(replica)) if endpoint.only_reads() => {
                    // The replica may lag: whatever it cannot answer, the
                    // answer stays the primary's 503.
                    let svc = &mut Service::new(replica, config, svc.env);
                    handle::<ENDPOINTS, S>(endpoint, id, svc, req)
                        .map(Response::degraded)
                        .map_err(|_| Error::Unavailable(why))
                }
                (result, _) => result,
            }
        });
        return match result {
            Ok(response) => response,
            Err(e) => Response::error(&e),
        };
    }
    Response::error(&if method_mismatch { Error::MethodNotAllowed } else { Error::NoRoute })
}

/// A set of endpoints as `serve` takes it.
pub const fn endpoints(list: &[Endpoint]) -> u32 {
    let mut set = 0;
    let mut i = 0;
    while i < list.len() {
        set |= list[i].bit();
        i += 1;
    }
    set
}

/// The secrets a component serving the endpoint set `endpoints` needs: the
/// only ones spin.toml gives it (least privilege).
pub fn secrets(endpoints: u32) -> Vec<&'static str> {
    crate::config::secrets()
        .filter(|s| Endpoint::ALL.iter().any(|e| endpoints & e.bit() != 0 && e.secret() == *s))
        .collect()
}

fn handle<const ENDPOINTS: u32, S: Store>(
    endpoint: Endpoint,
    id: Option<&str>,
    svc: &mut Service<'_, S>,
    req: &Request,
) -> Result<Response, Error> {
    if req.body.len() > MAX_BODY_BYTES {
        return Err(Error::PayloadTooLarge);
    }
    let now = svc.env.now;
    let header = |name: &str| (req.header)(name);
    let user = || {
        let (authorization, secret) = (header("authorization"), svc.config.auth_secret()?);
        match auth::verify_user(authorization.as_deref(), secret, now) {
            // A demo sign-in's token, valid only while demo mode is on.
            Err(e) if svc.config.demo_mode => {
                auth::verify_user(authorization.as_deref(), &auth::demo_token_secret(secret), now).map_err(|_| e)
            }
            verified => verified,
        }
    };
    let admin = || auth::verify_admin(header("authorization").as_deref(), svc.config.admin_token()?);
    // A malformed id and an unknown one both answer 404.
    let packet = || id.and_then(PacketId::parse).ok_or(Error::NotFound);
    Ok(match endpoint {
        Endpoint::Wrap if owns::<ENDPOINTS>(Endpoint::Wrap) => {
            let sender = user()?;
            let request = api::parse_wrap(req.body, svc.config)?;
            let (status, view) = svc.wrap(&sender, &request)?;
            Response::json(status, &view)
        }
        Endpoint::Payment if owns::<ENDPOINTS>(Endpoint::Payment) => {
            auth::verify_payment(header("x-payment-signature").as_deref(), svc.config.payment_secret()?, req.body)?;
            let id = packet()?;
            let request = api::parse_payment(req.body)?;
            Response::json(200, &svc.pay(&id, &request)?)
        }
        Endpoint::Grab if owns::<ENDPOINTS>(Endpoint::Grab) => {
            let user = user()?;
            Response::json(200, &svc.grab(&packet()?, &user)?)
        }
        Endpoint::Open if owns::<ENDPOINTS>(Endpoint::Open) => {
            let user = user()?;
            let id = packet()?;
            let ticket = api::parse_open(req.body)?;
            Response::json(200, &svc.open(&id, &user, &ticket)?)
        }
        Endpoint::Query if owns::<ENDPOINTS>(Endpoint::Query) => {
            let user = user()?;
            Response::json(200, &svc.query(&packet()?, &user)?)
        }
        Endpoint::Sent if owns::<ENDPOINTS>(Endpoint::Sent) => {
            let user = user()?;
            Response::json(200, &svc.sent(&user, api::parse_day(req.query, now.day())?)?)
        }
        Endpoint::Received if owns::<ENDPOINTS>(Endpoint::Received) => {
            let user = user()?;
            Response::json(200, &svc.received(&user, api::parse_day(req.query, now.day())?)?)
        }
        Endpoint::Wallet if owns::<ENDPOINTS>(Endpoint::Wallet) => {
            let user = user()?;
            Response::json(200, &svc.wallet(&user)?)
        }
        Endpoint::Expire if owns::<ENDPOINTS>(Endpoint::Expire) => {
            admin()?;
            Response::json(200, &svc.expire()?)
        }
        Endpoint::Settle if owns::<ENDPOINTS>(Endpoint::Settle) => {
            admin()?;
            Response::json(200, &svc.settle()?)
        }
        Endpoint::Reconcile if owns::<ENDPOINTS>(Endpoint::Reconcile) => {
            admin()?;
            Response::json(200, &svc.reconcile(api::parse_day(req.query, now.day())?)?)
        }
        Endpoint::Purge if owns::<ENDPOINTS>(Endpoint::Purge) => {
            admin()?;
            // Without a day, the newest one past the retention (a daily
            // cron's call); the cron goes on with each answer's cursor.
            let cursor = api::query_param(req.query, "cursor").filter(|c| !c.is_empty());
            Response::json(200, &svc.purge(api::day_param(req.query)?, cursor)?)
        }
        Endpoint::Placement if owns::<ENDPOINTS>(Endpoint::Placement) => {
            admin()?;
            Response::json(200, &svc.placement()?)
        }
        Endpoint::SetChange if owns::<ENDPOINTS>(Endpoint::SetChange) => {
            admin()?;
            let (set, open) = api::parse_set_change(req.body)?;
            Response::json(200, &svc.change_placement(set, open)?)
        }
        Endpoint::DemoSignIn if owns::<ENDPOINTS>(Endpoint::DemoSignIn) => {
            let user = api::parse_demo_sign_in(req.body)?;
            let expires_at = Timestamp(now.0 + DEMO_TOKEN_SECONDS);
            let token = auth::sign_user_token(&auth::demo_token_secret(svc.config.auth_secret()?), &user, expires_at);
            Response::json(200, &DemoToken { user, token, expires_at: expires_at.to_rfc3339() })
        }
        Endpoint::DemoPayment if owns::<ENDPOINTS>(Endpoint::DemoPayment) => {
            let user = user()?;
            let id = PacketId::parse(&api::parse_demo_payment(req.body)?).ok_or(Error::NotFound)?;
            Response::json(200, &svc.demo_pay(&id, &user)?)
        }
        _ => return Err(Error::NotFound),
    })
}

/// A constant per component and endpoint, so the compiler drops the arms of
/// endpoints a component does not serve.
const fn owns<const ENDPOINTS: u32>(endpoint: Endpoint) -> bool {
    ENDPOINTS & endpoint.bit() != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_component_needs_the_secrets_of_its_own_endpoints_only() {
        use Endpoint::*;
        assert_eq!(secrets(endpoints(&[Query, Sent, Received])), ["auth_secret"]);
        assert_eq!(secrets(endpoints(&[Payment])), ["payment_secret"]);
        assert_eq!(secrets(endpoints(&[Expire])), ["admin_token"]);
        assert_eq!(secrets(endpoints(&[Settle, Wrap, Payment])), ["auth_secret", "payment_secret", "admin_token"]);
        assert!(secrets(0).is_empty());
    }

    #[test]
    fn paths_match_their_endpoint_only() {
        assert_eq!(Endpoint::Wrap.matches("/v1/packets"), Some(None));
        assert_eq!(Endpoint::Wrap.matches("/v1/packets/"), Some(None));
        assert_eq!(Endpoint::Grab.matches("/v1/packets/abc/grab"), Some(Some("abc")));
        assert_eq!(Endpoint::Query.matches("/v1/packets/abc"), Some(Some("abc")));
        assert_eq!(Endpoint::Query.matches("/v1/packets/abc/grab"), None);
        assert_eq!(Endpoint::Grab.matches("/v1/packets//grab"), None);
        assert_eq!(Endpoint::Sent.matches("/v1/users/me/sent"), Some(None));
        assert_eq!(Endpoint::Sent.matches("/v1/users/you/sent"), None);
        assert_eq!(Endpoint::Expire.matches("/v2/admin/expire"), None);
        assert_eq!(Endpoint::DemoSignIn.matches("/v1/demo/sign-in"), Some(None));
        assert_eq!(Endpoint::DemoPayment.matches("/v1/demo/payment"), Some(None));
    }
}
