//! Authentication exactly as the contract states it, plus grab tickets.
//!
//! * users: `Authorization: Bearer <JWT>`, HS256 with `auth_secret`, claims
//!   `sub` (a valid user id) and `exp` (unix seconds, in the future);
//! * admins: `Authorization: Bearer <admin_token>`, compared in constant time;
//! * the payment system: `x-payment-signature: sha256=<hex HMAC-SHA256 of the raw body>`;
//! * tickets: grab hands out `{packet}.{user}.{expires}[.{facts}].{mac}`, an
//!   HMAC under a key derived from `auth_secret`, so open verifies it without
//!   a store read. The facts are the packet's terms that never change once it
//!   is paid (see `record::PacketFacts`), so a cursor open need not read the packet.

use crate::error::Error;
use crate::id::valid_user;
use crate::record::{PacketFacts, Strategy};
use crate::time::Timestamp;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// How long a grab ticket stays valid (the contract allows at most 120 s).
pub const TICKET_TTL_SECONDS: i64 = 60;

fn mac(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac
}

/// HMACs keyed with `auth_secret` (user tokens) and with the ticket key
/// derived from it, their key pads already hashed. Every grab and open
/// checks a token and a ticket: keying afresh each time hashed both pads of
/// each key and derived the ticket key again, more than half of an open's
/// SHA-256 work. Kept per thread (a component instance has one) for the one
/// secret in use; a different secret replaces it.
struct Keyed {
    secret: String,
    user: HmacSha256,
    ticket: HmacSha256,
}

fn keyed(auth_secret: &str, which: fn(&Keyed) -> &HmacSha256) -> HmacSha256 {
    thread_local! {
        static KEYED: std::cell::RefCell<Option<Keyed>> = const { std::cell::RefCell::new(None) };
    }
    KEYED.with(|cell| {
        let mut cell = cell.borrow_mut();
        let keyed = match cell.take() {
            Some(k) if k.secret == auth_secret => k,
            _ => Keyed {
                secret: auth_secret.to_owned(),
                user: mac(auth_secret.as_bytes(), &[]),
                ticket: mac(&ticket_key(auth_secret), &[]),
            },
        };
        let mac = which(&keyed).clone();
        *cell = Some(keyed);
        mac
    })
}

/// `keyed` with `parts` hashed in.
fn keyed_mac(auth_secret: &str, which: fn(&Keyed) -> &HmacSha256, parts: &[&[u8]]) -> HmacSha256 {
    let mut mac = keyed(auth_secret, which);
    for part in parts {
        mac.update(part);
    }
    mac
}

fn bearer(header: Option<&str>) -> Option<&str> {
    let value = header?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

/// Verifies a user's JWT and returns its `sub`.
pub fn verify_user(authorization: Option<&str>, secret: &str, now: Timestamp) -> Result<String, Error> {
    let token = bearer(authorization).ok_or(Error::Unauthorized("missing bearer token"))?;
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::Unauthorized("malformed token"));
    };
    // Nearly every token carries the standard header: skip decoding it.
    if header != STANDARD_HEADER {
        let header: serde_json::Value = base64url_decode(header)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(Error::Unauthorized("malformed token header"))?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(Error::Unauthorized("token must be signed with HS256"));
        }
    }
    let signature = base64url_decode(signature).ok_or(Error::Unauthorized("malformed token signature"))?;
    let signing_input = &token[..header_len(token)];
    keyed_mac(secret, |k| &k.user, &[signing_input.as_bytes()])
        .verify_slice(&signature)
        .map_err(|_| Error::Unauthorized("bad token signature"))?;
    let claims: Claims = base64url_decode(payload)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(Error::Unauthorized("malformed token claims"))?;
    let exp = claims.exp.and_then(|e| e.as_i64().or_else(|| e.as_f64().map(|f| f as i64)));
    match exp {
        Some(exp) if exp > now.0 => {}
        Some(_) => return Err(Error::Unauthorized("token expired")),
        None => return Err(Error::Unauthorized("token has no exp")),
    }
    match claims.sub {
        Some(serde_json::Value::String(sub)) if valid_user(&sub) => Ok(sub),
        _ => Err(Error::Unauthorized("token sub is not a valid user id")),
    }
}

/// The two claims we check; any others are skipped while parsing, not kept
/// in a map (the map was most of the claims' parsing cost).
#[derive(serde::Deserialize)]
struct Claims {
    exp: Option<serde_json::Value>,
    sub: Option<serde_json::Value>,
}

/// `{"alg":"HS256","typ":"JWT"}`, base64url-encoded.
const STANDARD_HEADER: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// Length of `header.payload`, the JWT signing input.
fn header_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(0)
}

/// Mints an HS256 JWT (for tests, the bench and the local CLI).
pub fn sign_user_token(secret: &str, sub: &str, exp: Timestamp) -> String {
    let header = base64url_encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = base64url_encode(serde_json::json!({"sub": sub, "exp": exp.0}).to_string().as_bytes());
    let input = format!("{header}.{claims}");
    let signature = mac(secret.as_bytes(), &[input.as_bytes()]).finalize().into_bytes();
    format!("{input}.{}", base64url_encode(&signature))
}

/// Admin bearer token, compared in constant time (hashes of equal length are
/// compared, so neither content nor length leaks through timing).
pub fn verify_admin(authorization: Option<&str>, admin_token: &str) -> Result<(), Error> {
    let given = bearer(authorization).ok_or(Error::Unauthorized("missing bearer token"))?;
    let key = Sha256::digest(admin_token.as_bytes());
    mac(&key, &[given.as_bytes()])
        .verify_slice(&mac(&key, &[admin_token.as_bytes()]).finalize().into_bytes())
        .map_err(|_| Error::Unauthorized("bad admin token"))
}

/// A cursor handed to an admin client and taken back (the purge's): hex of
/// `text` and of a MAC keyed by the admin token, so a forged or altered one
/// is refused before the store is asked to go on from it.
pub fn sign_cursor(admin_token: &str, text: &str) -> String {
    let code = mac(admin_token.as_bytes(), &[b"cursor.", text.as_bytes()]).finalize().into_bytes();
    format!("{}{}", hex::encode(text), hex::encode(&code[..CURSOR_MAC_BYTES]))
}

/// The text of a cursor `sign_cursor` made with this admin token.
pub fn verify_cursor(admin_token: &str, cursor: &str) -> Option<String> {
    let bytes = hex::decode(cursor).ok()?;
    let (text, code) = bytes.split_at_checked(bytes.len().checked_sub(CURSOR_MAC_BYTES)?)?;
    mac(admin_token.as_bytes(), &[b"cursor.", text]).verify_truncated_left(code).ok()?;
    String::from_utf8(text.to_vec()).ok()
}

const CURSOR_MAC_BYTES: usize = 16;

/// The payment callback's signature over the raw body.
pub fn verify_payment(signature_header: Option<&str>, secret: &str, body: &[u8]) -> Result<(), Error> {
    let hex = signature_header.and_then(|h| h.trim().strip_prefix("sha256=")).ok_or(Error::BadSignature)?;
    let given = hex::decode(hex).map_err(|_| Error::BadSignature)?;
    mac(secret.as_bytes(), &[body]).verify_slice(&given).map_err(|_| Error::BadSignature)
}

/// `sha256=<hex>` for a body (for the payment system's side, and tests).
pub fn sign_payment(secret: &str, body: &[u8]) -> String {
    let code = mac(secret.as_bytes(), &[body]).finalize().into_bytes();
    format!("sha256={}", hex::encode(code))
}

/// The key of demo-mode sign-in tokens, derived from `auth_secret`: a
/// token signed with it is a user token only while demo mode is on (see
/// `http`), so turning demo mode off revokes every one of them.
pub fn demo_token_secret(auth_secret: &str) -> String {
    hex::encode(mac(auth_secret.as_bytes(), &[b"hongbao demo token v1"]).finalize().into_bytes())
}

fn ticket_key(auth_secret: &str) -> Vec<u8> {
    mac(auth_secret.as_bytes(), &[b"hongbao grab ticket v1"]).finalize().into_bytes().to_vec()
}

/// `{c|s}{count}.{expires_at}.{sender}`: no field holds a `.` (user ids
/// cannot), so the ticket still splits on dots.
fn encode_facts(facts: &PacketFacts) -> String {
    let strategy = match facts.strategy {
        Strategy::Cas => 's',
        Strategy::Cursor => 'c',
    };
    format!("{strategy}{}.{}.{}", facts.count, facts.expires_at.0, facts.sender)
}

fn decode_facts(count: &str, expires_at: &str, sender: &str) -> Option<PacketFacts> {
    let strategy = match count.as_bytes().first()? {
        b's' => Strategy::Cas,
        b'c' => Strategy::Cursor,
        _ => return None,
    };
    Some(PacketFacts {
        strategy,
        count: count[1..].parse().ok()?,
        expires_at: Timestamp(expires_at.parse().ok()?),
        sender: valid_user(sender).then(|| sender.to_owned())?,
    })
}

/// A grab ticket binding (packet, user, expiry), and the packet's facts if
/// given (tickets without them make open read the packet).
pub fn issue_ticket(
    auth_secret: &str,
    packet_id: &str,
    user: &str,
    expires_at: Timestamp,
    facts: Option<&PacketFacts>,
) -> String {
    let mut body = format!("{packet_id}.{user}.{}", expires_at.0);
    if let Some(facts) = facts {
        body.push('.');
        body.push_str(&encode_facts(facts));
    }
    let code = keyed_mac(auth_secret, |k| &k.ticket, &[body.as_bytes()]).finalize().into_bytes();
    format!("{body}.{}", base64url_encode(&code))
}

/// Open's check: the ticket is ours, for this packet and user, and not
/// expired. Returns the packet facts it carries, if any.
pub fn verify_ticket(
    auth_secret: &str,
    ticket: &str,
    packet_id: &str,
    user: &str,
    now: Timestamp,
) -> Result<Option<PacketFacts>, Error> {
    let malformed = Error::InvalidTicket("malformed ticket");
    let (body, code) = ticket.rsplit_once('.').ok_or(malformed.clone())?;
    let code = base64url_decode(code).ok_or(malformed.clone())?;
    keyed_mac(auth_secret, |k| &k.ticket, &[body.as_bytes()])
        .verify_slice(&code)
        .map_err(|_| Error::InvalidTicket("forged ticket"))?;
    let fields: Vec<&str> = body.split('.').collect();
    let (packet, holder, expires, facts) = match fields[..] {
        [packet, holder, expires] => (packet, holder, expires, None),
        [packet, holder, expires, count, expires_at, sender] => {
            (packet, holder, expires, Some(decode_facts(count, expires_at, sender).ok_or(malformed.clone())?))
        }
        _ => return Err(malformed),
    };
    if packet != packet_id {
        return Err(Error::InvalidTicket("ticket is for another packet"));
    }
    if holder != user {
        return Err(Error::InvalidTicket("ticket belongs to another user"));
    }
    let expires: i64 = expires.parse().map_err(|_| malformed)?;
    if now.0 >= expires {
        return Err(Error::InvalidTicket("ticket expired"));
    }
    Ok(facts)
}

/// Unpadded base64url, decoding canonical text only: trailing `=` are
/// tolerated, but bits past the last byte must be zero, so every signature
/// has exactly one accepted spelling (no malleable tokens or tickets).
const B64URL: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

pub fn base64url_encode(bytes: &[u8]) -> String {
    base64::Engine::encode(&B64URL, bytes)
}

/// `None` if malformed or not canonical.
pub fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    base64::Engine::decode(&B64URL, text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp(1_800_000_000);

    #[test]
    fn base64url_round_trips() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64url_decode(&base64url_encode(&bytes)), Some(bytes));
        }
        assert_eq!(base64url_encode(b"hi?"), "aGk_");
        assert_eq!(base64url_decode("a"), None);
        assert_eq!(base64url_decode("a+b/"), None);
        assert_eq!(base64url_decode("aGk="), Some(b"hi".to_vec()), "padding tolerated");
    }

    /// Regression (review, defect 9): the decoder ignored the low bits of the
    /// last character, so a signature had four accepted spellings.
    #[test]
    fn only_the_canonical_spelling_of_a_signature_is_accepted() {
        let token = sign_user_token("k", "alice", NOW.plus_seconds(60));
        let ticket = issue_ticket("k", "pkt", "alice", NOW.plus_seconds(60), None);
        // A 32-byte MAC is 43 characters: the last one carries 4 bits, 2 unused.
        let respell = |text: &str| {
            let last = text.chars().last().unwrap();
            let i = B64URL_ALPHABET.find(last).unwrap();
            format!("{}{}", &text[..text.len() - 1], &B64URL_ALPHABET[i ^ 1..=i ^ 1])
        };
        let (token_body, _) = token.rsplit_once('.').unwrap();
        let respelled = respell(&token);
        assert_ne!(respelled, token);
        assert_eq!(
            verify_user(Some(&format!("Bearer {respelled}")), "k", NOW),
            Err(Error::Unauthorized("malformed token signature")),
            "{token_body}"
        );
        assert_eq!(
            verify_ticket("k", &respell(&ticket), "pkt", "alice", NOW),
            Err(Error::InvalidTicket("malformed ticket"))
        );
        assert!(verify_ticket("k", &ticket, "pkt", "alice", NOW).is_ok());
    }

    const B64URL_ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    #[test]
    fn jwt_accepts_a_good_token_only() {
        let token = sign_user_token("s3cret", "alice", NOW.plus_seconds(60));
        let header = format!("Bearer {token}");
        assert_eq!(verify_user(Some(&header), "s3cret", NOW), Ok("alice".into()));
        assert_eq!(verify_user(Some(&format!("bearer {token}")), "s3cret", NOW), Ok("alice".into()));
        let unauthorized = |h: Option<&str>, secret: &str, now| verify_user(h, secret, now).unwrap_err().code();
        assert_eq!(unauthorized(None, "s3cret", NOW), "unauthorized");
        assert_eq!(unauthorized(Some(&header), "other", NOW), "unauthorized");
        assert_eq!(unauthorized(Some(&header), "s3cret", NOW.plus_seconds(60)), "unauthorized");
        assert_eq!(unauthorized(Some("Bearer a.b"), "s3cret", NOW), "unauthorized");
        assert_eq!(unauthorized(Some(&format!("Basic {token}")), "s3cret", NOW), "unauthorized");
        let bad_sub = sign_user_token("s3cret", "a/b", NOW.plus_seconds(60));
        assert_eq!(unauthorized(Some(&format!("Bearer {bad_sub}")), "s3cret", NOW), "unauthorized");
    }

    #[test]
    fn jwt_claims_are_read_whatever_else_they_hold() {
        let signed = |claims: &str| {
            let input = format!("{STANDARD_HEADER}.{}", base64url_encode(claims.as_bytes()));
            let code = mac(b"k", &[input.as_bytes()]).finalize().into_bytes();
            format!("Bearer {input}.{}", base64url_encode(&code))
        };
        let verify = |claims: &str| verify_user(Some(&signed(claims)), "k", NOW);
        assert_eq!(verify(r#"{"iss":"x","sub":"bob","aud":["a"],"exp":9999999999,"n":{"k":1}}"#), Ok("bob".into()));
        assert_eq!(verify(r#"{"sub":"bob","exp":9999999999.5}"#), Ok("bob".into()), "a float exp");
        assert_eq!(verify(r#"{"sub":"bob"}"#), Err(Error::Unauthorized("token has no exp")));
        assert_eq!(verify(r#"{"sub":"bob","exp":"9999999999"}"#), Err(Error::Unauthorized("token has no exp")));
        assert_eq!(verify(r#"{"sub":"bob","exp":1}"#), Err(Error::Unauthorized("token expired")));
        let bad_sub = Err(Error::Unauthorized("token sub is not a valid user id"));
        assert_eq!(verify(r#"{"sub":7,"exp":9999999999}"#), bad_sub);
        assert_eq!(verify(r#"{"exp":9999999999}"#), bad_sub);
        assert_eq!(verify(r#"["bob",9999999999]"#).unwrap_err().code(), "unauthorized");
    }

    #[test]
    fn jwt_with_alg_none_or_tampered_claims_is_refused() {
        let token = sign_user_token("k", "alice", NOW.plus_seconds(60));
        let parts: Vec<&str> = token.split('.').collect();
        let none_header = base64url_encode(br#"{"alg":"none"}"#);
        let forged = format!("{none_header}.{}.{}", parts[1], parts[2]);
        assert!(verify_user(Some(&format!("Bearer {forged}")), "k", NOW).is_err());
        let other_claims = base64url_encode(br#"{"sub":"mallory","exp":9999999999}"#);
        let forged = format!("{}.{other_claims}.{}", parts[0], parts[2]);
        assert!(verify_user(Some(&format!("Bearer {forged}")), "k", NOW).is_err());
    }

    #[test]
    fn jwt_matches_an_independent_hs256_vector() {
        // A token produced by a third-party library, PyJWT 2.15.1:
        // jwt.encode({"sub": "bob", "exp": 4102444800}, "secret", algorithm="HS256")
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJib2IiLCJleHAiOjQxMDI0NDQ4MDB9.-hlAIiQnShtxuwadox2PQu6XBNQw2DtmGq9cTCzoUwk";
        assert_eq!(verify_user(Some(&format!("Bearer {token}")), "secret", NOW), Ok("bob".into()));
    }

    #[test]
    fn the_standard_header_constant_is_the_standard_header() {
        assert_eq!(STANDARD_HEADER, base64url_encode(br#"{"alg":"HS256","typ":"JWT"}"#));
        assert!(sign_user_token("k", "alice", NOW).starts_with(&format!("{STANDARD_HEADER}.")));
    }

    #[test]
    fn keyed_macs_match_fresh_ones_whatever_secret_came_before() {
        let long = "a secret longer than one SHA-256 block, so HMAC hashes it first: 0123456789";
        for secret in ["a", "b", "a", long, "a"] {
            let ticket = issue_ticket(secret, "pkt", "u", NOW, None);
            let (body, code) = ticket.rsplit_once('.').unwrap();
            let fresh = mac(&ticket_key(secret), &[body.as_bytes()]).finalize().into_bytes();
            assert_eq!(base64url_decode(code), Some(fresh.to_vec()), "{secret}");
            assert_eq!(verify_ticket(secret, &ticket, "pkt", "u", NOW.plus_seconds(-1)), Ok(None));
            let token = sign_user_token(secret, "u", NOW.plus_seconds(60));
            assert_eq!(verify_user(Some(&format!("Bearer {token}")), secret, NOW), Ok("u".into()));
            assert!(verify_user(Some(&format!("Bearer {token}")), "c", NOW).is_err());
        }
    }

    #[test]
    fn admin_token_is_exact() {
        assert_eq!(verify_admin(Some("Bearer tok"), "tok"), Ok(()));
        assert!(verify_admin(Some("Bearer tok2"), "tok").is_err());
        assert!(verify_admin(Some("Bearer to"), "tok").is_err());
        assert!(verify_admin(None, "tok").is_err());
    }

    #[test]
    fn payment_signature_covers_the_raw_body() {
        let body = br#"{"payment_id":"p1","amount_fen":100,"status":"success"}"#;
        let sig = sign_payment("pk", body);
        assert_eq!(verify_payment(Some(&sig), "pk", body), Ok(()));
        assert_eq!(verify_payment(Some(&sig.to_uppercase().replace("SHA256=", "sha256=")), "pk", body), Ok(()));
        assert_eq!(verify_payment(Some(&sig), "pk", b"{}"), Err(Error::BadSignature));
        assert_eq!(verify_payment(Some(&sig), "other", body), Err(Error::BadSignature));
        assert_eq!(verify_payment(None, "pk", body), Err(Error::BadSignature));
        assert_eq!(verify_payment(Some("sha256=zz"), "pk", body), Err(Error::BadSignature));
    }

    #[test]
    fn tickets_bind_packet_user_and_time() {
        let t = issue_ticket("k", "pkt", "alice", NOW.plus_seconds(60), None);
        assert_eq!(verify_ticket("k", &t, "pkt", "alice", NOW), Ok(None));
        assert!(verify_ticket("k", &t, "pkt", "bob", NOW).is_err());
        assert!(verify_ticket("k", &t, "other", "alice", NOW).is_err());
        assert!(verify_ticket("k", &t, "pkt", "alice", NOW.plus_seconds(60)).is_err());
        assert!(verify_ticket("k2", &t, "pkt", "alice", NOW).is_err());
        let forged = t.replacen("alice", "bob", 1);
        assert!(verify_ticket("k", &forged, "pkt", "bob", NOW).is_err());
        assert!(verify_ticket("k", "", "pkt", "alice", NOW).is_err());
    }

    #[test]
    fn tickets_carry_signed_packet_facts() {
        let facts = PacketFacts {
            strategy: Strategy::Cursor,
            count: 1000,
            expires_at: NOW.plus_seconds(86_400),
            sender: "bob".into(),
        };
        let t = issue_ticket("k", "pkt", "alice", NOW.plus_seconds(60), Some(&facts));
        assert_eq!(verify_ticket("k", &t, "pkt", "alice", NOW), Ok(Some(facts.clone())));
        let cas = PacketFacts { strategy: Strategy::Cas, ..facts.clone() };
        let t2 = issue_ticket("k", "pkt", "alice", NOW.plus_seconds(60), Some(&cas));
        assert_eq!(verify_ticket("k", &t2, "pkt", "alice", NOW), Ok(Some(cas)));
        // The facts are signed: changing any of them forges the ticket.
        for (from, to) in [(".c1000.", ".c9999."), (".c1000.", ".s1000."), (".bob.", ".eve.")] {
            let forged = t.replacen(from, to, 1);
            assert_ne!(forged, t);
            assert_eq!(verify_ticket("k", &forged, "pkt", "alice", NOW), Err(Error::InvalidTicket("forged ticket")));
        }
        // Signed but malformed facts are refused, not misread.
        for body in [
            "pkt.alice.9999999999.x1.2.bob",
            "pkt.alice.9999999999.c1.2",
            "pkt.alice.9999999999.c1.2.b.b",
            "pkt.alice.9999999999.c1.zz.bob",
        ] {
            let code = keyed_mac("k", |k| &k.ticket, &[body.as_bytes()]).finalize().into_bytes();
            let signed = format!("{body}.{}", base64url_encode(&code));
            assert_eq!(
                verify_ticket("k", &signed, "pkt", "alice", NOW),
                Err(Error::InvalidTicket("malformed ticket")),
                "{body}"
            );
        }
    }
}
