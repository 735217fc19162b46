//! Decoding request bodies and query strings into checked domain inputs, with
//! the contract's errors: 400 `invalid_json` when the body is not a JSON
//! object, 422 `invalid_argument` naming the first bad field. Unknown fields
//! are ignored. Fields are read one by one (not with a derive) so that each
//! message can say exactly which field is wrong and why.

use crate::alloc::{Kind, SplitError, check_splittable};
use crate::config::Config;
use crate::error::Error;
use crate::money::Fen;
use crate::record::WrapTerms;
use crate::time::Day;
use serde_json::{Map, Value};

/// Bodies above this are refused with 413 before parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct WrapRequest {
    pub request_id: String,
    pub terms: WrapTerms,
}

pub struct PaymentRequest {
    /// The packet the payment is for: signed with the body, so a callback
    /// cannot be replayed to another packet (contract v1.1).
    pub packet_id: String,
    pub payment_id: String,
    pub amount_fen: Fen,
}

fn object(body: &[u8]) -> Result<Map<String, Value>, Error> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Error::PayloadTooLarge);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::InvalidJson("the body must be a JSON object".into())),
        Err(e) => Err(Error::InvalidJson(format!("the body is not valid JSON: {e}"))),
    }
}

fn invalid(field: &str, why: &str) -> Error {
    Error::InvalidArgument(format!("{field}: {why}"))
}

fn string(map: &Map<String, Value>, field: &str, max_chars: usize) -> Result<String, Error> {
    match map.get(field) {
        Some(Value::String(s)) if (1..=max_chars).contains(&s.chars().count()) => Ok(s.clone()),
        Some(Value::String(_)) => Err(invalid(field, &format!("must be 1 to {max_chars} characters"))),
        None | Some(Value::Null) => Err(invalid(field, "is required")),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

fn optional_string(map: &Map<String, Value>, field: &str, max_chars: usize) -> Result<Option<String>, Error> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= max_chars => Ok(Some(s.clone())),
        Some(Value::String(_)) => Err(invalid(field, &format!("must be at most {max_chars} characters"))),
        Some(_) => Err(invalid(field, "must be a string")),
    }
}

fn integer(map: &Map<String, Value>, field: &str) -> Result<u64, Error> {
    match map.get(field) {
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| invalid(field, "must be a non-negative integer")),
        None | Some(Value::Null) => Err(invalid(field, "is required")),
        Some(_) => Err(invalid(field, "must be an integer")),
    }
}

/// `POST /v1/packets`.
pub fn parse_wrap(body: &[u8], config: &Config) -> Result<WrapRequest, Error> {
    let map = object(body)?;
    let request_id = string(&map, "request_id", 64)?;
    let kind = match map.get("kind") {
        Some(Value::String(s)) => Kind::parse(s).ok_or_else(|| invalid("kind", "must be \"lucky\" or \"fixed\""))?,
        None | Some(Value::Null) => return Err(invalid("kind", "is required")),
        Some(_) => return Err(invalid("kind", "must be \"lucky\" or \"fixed\"")),
    };
    let total = integer(&map, "total_fen")?;
    let count = integer(&map, "count")?;
    if count < 1 || count > u64::from(config.max_count) {
        return Err(invalid("count", &format!("must be between 1 and {}", config.max_count)));
    }
    let count = count as u32;
    match check_splittable(kind, Fen(total), count) {
        Err(SplitError::TooLittle) => return Err(invalid("total_fen", "must be at least count (1 fen per share)")),
        Err(SplitError::Indivisible) => {
            return Err(invalid("total_fen", "must be a multiple of count for a fixed packet"));
        }
        Err(SplitError::NoShares) => return Err(invalid("count", "must be at least 1")),
        Ok(()) => {}
    }
    if u128::from(total) > u128::from(config.max_share_fen) * u128::from(count) {
        return Err(invalid("total_fen", &format!("must be at most max_share_fen ({}) x count", config.max_share_fen)));
    }
    let greeting = optional_string(&map, "greeting", 100)?;
    let group_id = optional_string(&map, "group_id", 64)?;
    Ok(WrapRequest { request_id, terms: WrapTerms { kind, total_fen: Fen(total), count, greeting, group_id } })
}

/// `POST /v1/packets/{id}/payment`.
pub fn parse_payment(body: &[u8]) -> Result<PaymentRequest, Error> {
    let map = object(body)?;
    let packet_id = string(&map, "packet_id", 64)?;
    let payment_id = string(&map, "payment_id", 64)?;
    let amount_fen = Fen(integer(&map, "amount_fen")?);
    match map.get("status") {
        Some(Value::String(s)) if s == "success" => {}
        None | Some(Value::Null) => return Err(invalid("status", "is required")),
        Some(_) => return Err(invalid("status", "must be \"success\"")),
    }
    Ok(PaymentRequest { packet_id, payment_id, amount_fen })
}

/// `POST /v1/demo/sign-in` (demo mode): the name to sign in as, a user id.
pub fn parse_demo_sign_in(body: &[u8]) -> Result<String, Error> {
    let name = string(&object(body)?, "name", 64)?;
    if !crate::id::valid_user(&name) {
        return Err(invalid("name", "must be letters, digits, _ or - (it becomes your user id)"));
    }
    Ok(name)
}

/// `POST /v1/demo/payment` (demo mode): the packet to pay.
pub fn parse_demo_payment(body: &[u8]) -> Result<String, Error> {
    string(&object(body)?, "packet_id", 64)
}

/// `POST /v1/admin/sets`: `{"set": 0..9, "state": "drained" | "open"}`;
/// returns the SET and whether it is to take new packets.
pub fn parse_set_change(body: &[u8]) -> Result<(u32, bool), Error> {
    let map = object(body)?;
    let set = integer(&map, "set")?;
    let set = u32::try_from(set).ok().filter(|&s| s < crate::id::SETS);
    let set = set.ok_or_else(|| invalid("set", &format!("must be a SET, 0 to {}", crate::id::SETS - 1)))?;
    let open = match map.get("state") {
        Some(Value::String(s)) if s == "open" => true,
        Some(Value::String(s)) if s == "drained" => false,
        None | Some(Value::Null) => return Err(invalid("state", "is required")),
        Some(_) => return Err(invalid("state", "must be \"open\" or \"drained\"")),
    };
    Ok((set, open))
}

/// `POST /v1/packets/{id}/open`: the ticket, or 403 `invalid_ticket`.
pub fn parse_open(body: &[u8]) -> Result<String, Error> {
    let map = object(body)?;
    match map.get("ticket") {
        Some(Value::String(t)) if !t.is_empty() => Ok(t.clone()),
        _ => Err(Error::InvalidTicket("missing ticket")),
    }
}

/// The `day` query parameter (`YYYY-MM-DD`), today (UTC) when absent.
pub fn parse_day(query: Option<&str>, default: Day) -> Result<Day, Error> {
    Ok(day_param(query)?.unwrap_or(default))
}

/// The query's `day` parameter, if given (`day=YYYY-MM-DD`).
pub fn day_param(query: Option<&str>) -> Result<Option<Day>, Error> {
    match query_param(query, "day") {
        None | Some("") => Ok(None),
        Some(text) => Day::parse_iso(text).map(Some).ok_or_else(|| invalid("day", "must be a date YYYY-MM-DD")),
    }
}

/// The value of the query parameter `name`, undecoded (hongbao's own
/// parameters are URL-safe).
pub fn query_param<'q>(query: Option<&'q str>, name: &str) -> Option<&'q str> {
    query.unwrap_or("").split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn wrap(body: &str) -> Result<WrapRequest, Error> {
        parse_wrap(body.as_bytes(), &Config::for_tests())
    }

    fn field_error(body: &str) -> String {
        match wrap(body) {
            Err(Error::InvalidArgument(m)) => m,
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("accepted {body}"),
        }
    }

    #[test]
    fn a_good_wrap_body_parses_and_ignores_unknown_fields() {
        let r = wrap(r#"{"request_id":"r1","kind":"lucky","total_fen":1000,"count":10,"greeting":"恭喜发财","x":1}"#)
            .unwrap();
        assert_eq!(r.request_id, "r1");
        assert_eq!(r.terms.total_fen, Fen(1000));
        assert_eq!(r.terms.greeting.as_deref(), Some("恭喜发财"));
        assert_eq!(r.terms.group_id, None);
    }

    #[test]
    fn wrap_errors_name_the_field() {
        assert!(matches!(wrap("{"), Err(Error::InvalidJson(_))));
        assert!(matches!(wrap("[1]"), Err(Error::InvalidJson(_))));
        assert!(field_error(r#"{"kind":"lucky","total_fen":1,"count":1}"#).starts_with("request_id"));
        assert!(field_error(r#"{"request_id":"r","kind":"big","total_fen":1,"count":1}"#).starts_with("kind"));
        assert!(field_error(r#"{"request_id":"r","kind":"lucky","total_fen":1.5,"count":1}"#).starts_with("total_fen"));
        assert!(field_error(r#"{"request_id":"r","kind":"lucky","total_fen":-1,"count":1}"#).starts_with("total_fen"));
        assert!(field_error(r#"{"request_id":"r","kind":"lucky","total_fen":"1","count":1}"#).starts_with("total_fen"));
        assert!(field_error(r#"{"request_id":"r","kind":"lucky","total_fen":100,"count":0}"#).starts_with("count"));
        assert!(field_error(r#"{"request_id":"r","kind":"lucky","total_fen":1000,"count":101}"#).starts_with("count"));
        assert!(field_error(r#"{"request_id":"r","kind":"lucky","total_fen":9,"count":10}"#).starts_with("total_fen"));
        assert!(field_error(r#"{"request_id":"r","kind":"fixed","total_fen":10,"count":3}"#).starts_with("total_fen"));
        assert!(
            field_error(r#"{"request_id":"r","kind":"lucky","total_fen":20001,"count":1}"#).starts_with("total_fen")
        );
        let long = "x".repeat(101);
        assert!(
            field_error(&format!(r#"{{"request_id":"r","kind":"lucky","total_fen":1,"count":1,"greeting":"{long}"}}"#))
                .starts_with("greeting")
        );
        assert!(
            field_error(&format!(r#"{{"request_id":"{}","kind":"lucky","total_fen":1,"count":1}}"#, "r".repeat(65)))
                .starts_with("request_id")
        );
    }

    #[test]
    fn limits_are_inclusive() {
        assert!(wrap(r#"{"request_id":"r","kind":"lucky","total_fen":2000000,"count":100}"#).is_ok());
        assert!(wrap(r#"{"request_id":"r","kind":"fixed","total_fen":100,"count":100}"#).is_ok());
    }

    #[test]
    fn payment_body() {
        let p = parse_payment(br#"{"packet_id":"x","payment_id":"p","amount_fen":5,"status":"success"}"#).unwrap();
        assert_eq!((p.packet_id.as_str(), p.payment_id.as_str(), p.amount_fen), ("x", "p", Fen(5)));
        let refused = |body: &[u8]| match parse_payment(body) {
            Err(Error::InvalidArgument(m)) => m.split(':').next().unwrap().to_owned(),
            other => panic!("{:?}", other.map(|p| p.payment_id)),
        };
        assert_eq!(refused(br#"{"packet_id":"x","payment_id":"p","amount_fen":5,"status":"failed"}"#), "status");
        assert_eq!(refused(br#"{"packet_id":"x","payment_id":"","amount_fen":5,"status":"success"}"#), "payment_id");
        // Contract v1.1: the signed body must name its packet.
        assert_eq!(refused(br#"{"payment_id":"p","amount_fen":5,"status":"success"}"#), "packet_id");
    }

    #[test]
    fn open_body_and_day_query() {
        assert_eq!(parse_open(br#"{"ticket":"t"}"#), Ok("t".into()));
        assert!(matches!(parse_open(br#"{}"#), Err(Error::InvalidTicket(_))));
        let now = Timestamp(1_795_305_600);
        assert_eq!(parse_day(None, now.day()).unwrap().to_string(), "2026-11-22");
        assert_eq!(parse_day(Some("x=1&day=2026-01-02"), now.day()).unwrap().to_string(), "2026-01-02");
        assert!(parse_day(Some("day=2026-02-30"), now.day()).is_err());
    }

    #[test]
    fn demo_bodies() {
        assert_eq!(parse_demo_sign_in(br#"{"name":"alice_1"}"#), Ok("alice_1".into()));
        for bad in [&br#"{"name":"a b"}"#[..], br#"{"name":""}"#, br#"{}"#, br#"{"name":7}"#] {
            assert!(matches!(parse_demo_sign_in(bad), Err(Error::InvalidArgument(m)) if m.starts_with("name")));
        }
        assert_eq!(parse_demo_payment(br#"{"packet_id":"p1"}"#), Ok("p1".into()));
        assert!(matches!(parse_demo_payment(b"{}"), Err(Error::InvalidArgument(m)) if m.starts_with("packet_id")));
    }

    #[test]
    fn oversized_bodies_are_refused() {
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        assert!(matches!(parse_payment(&big), Err(Error::PayloadTooLarge)));
    }
}
