//! Every failure an operation can answer, and the single mapping from each to
//! the contract's HTTP status and error code.

use crate::record::Claim;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The body is not JSON (or not an object).
    InvalidJson(String),
    /// A field is missing or out of its allowed range; the message names it.
    InvalidArgument(String),
    Unauthorized(&'static str),
    BadSignature,
    NotFound,
    /// No endpoint at this path (also 404 `not_found`).
    NoRoute,
    IdempotencyConflict(String),
    AlreadyPaid,
    /// The payment_id already paid another packet.
    PaymentReused,
    /// The sender has too many packets of today awaiting payment.
    TooManyUnpaid(u32),
    AmountMismatch {
        expected: u64,
        got: u64,
    },
    NotSent,
    Expired,
    Exhausted,
    AlreadyClaimed(Claim),
    InvalidTicket(&'static str),
    /// The purge refused a day whose money still moves or does not reconcile.
    DayNotClosed(String),
    /// Load shed before the store, or too much contention: nothing was done.
    Busy {
        retry_after_seconds: u32,
    },
    PayloadTooLarge,
    MethodNotAllowed,
    /// The store failed: nothing is known to be half-done (see README).
    Unavailable(String),
    /// A bug or a misconfiguration, never bad input.
    Internal(String),
}

impl Error {
    pub fn status(&self) -> u16 {
        match self {
            Error::InvalidJson(_) => 400,
            Error::Unauthorized(_) | Error::BadSignature => 401,
            Error::InvalidTicket(_) => 403,
            Error::NotFound | Error::NoRoute => 404,
            Error::MethodNotAllowed => 405,
            Error::IdempotencyConflict(_)
            | Error::AlreadyPaid
            | Error::PaymentReused
            | Error::TooManyUnpaid(_)
            | Error::NotSent
            | Error::AlreadyClaimed(_)
            | Error::DayNotClosed(_) => 409,
            Error::Expired | Error::Exhausted => 410,
            Error::PayloadTooLarge => 413,
            Error::InvalidArgument(_) | Error::AmountMismatch { .. } => 422,
            Error::Busy { .. } => 429,
            Error::Internal(_) => 500,
            Error::Unavailable(_) => 503,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidJson(_) => "invalid_json",
            Error::InvalidArgument(_) => "invalid_argument",
            Error::Unauthorized(_) => "unauthorized",
            Error::BadSignature => "bad_signature",
            Error::NotFound | Error::NoRoute => "not_found",
            Error::IdempotencyConflict(_) => "idempotency_conflict",
            Error::AlreadyPaid => "already_paid",
            Error::PaymentReused => "payment_reused",
            Error::TooManyUnpaid(_) => "too_many_unpaid",
            Error::AmountMismatch { .. } => "amount_mismatch",
            Error::NotSent => "not_sent",
            Error::Expired => "expired",
            Error::Exhausted => "exhausted",
            Error::AlreadyClaimed(_) => "already_claimed",
            Error::InvalidTicket(_) => "invalid_ticket",
            Error::DayNotClosed(_) => "day_not_closed",
            Error::Busy { .. } => "busy",
            Error::PayloadTooLarge => "payload_too_large",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Error::InvalidJson(m)
            | Error::InvalidArgument(m)
            | Error::IdempotencyConflict(m)
            | Error::DayNotClosed(m) => m.clone(),
            Error::Unauthorized(m) | Error::InvalidTicket(m) => (*m).to_owned(),
            Error::BadSignature => "x-payment-signature does not match the body".into(),
            Error::NotFound => "no such packet".into(),
            Error::NoRoute => "no such endpoint".into(),
            Error::AlreadyPaid => "the packet was paid by another payment".into(),
            Error::PaymentReused => "this payment_id already paid another packet".into(),
            Error::TooManyUnpaid(limit) => {
                format!("{limit} packets of today await payment: pay one of them before wrapping another")
            }
            Error::AmountMismatch { expected, got } => {
                format!("amount_fen {got} does not match the packet's total_fen {expected}")
            }
            Error::NotSent => "the packet has not been paid yet".into(),
            Error::Expired => "the packet has expired".into(),
            Error::Exhausted => "no share is left in this packet".into(),
            Error::AlreadyClaimed(_) => "you already opened this packet".into(),
            Error::Busy { .. } => "the packet is busy, retry later".into(),
            Error::PayloadTooLarge => "the request body is too large".into(),
            Error::MethodNotAllowed => "method not allowed on this route".into(),
            Error::Unavailable(m) => format!("storage unavailable: {m}"),
            Error::Internal(m) => format!("internal error: {m}"),
        }
    }

    /// Seconds for a `Retry-After` header, where the contract wants one.
    pub fn retry_after(&self) -> Option<u32> {
        match self {
            Error::Busy { retry_after_seconds } => Some(*retry_after_seconds),
            Error::Unavailable(_) => Some(1),
            _ => None,
        }
    }

    /// The JSON body: `{"error": {"code", "message"}}`, plus `claim` for
    /// `already_claimed`.
    pub fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({"error": {"code": self.code(), "message": self.message()}});
        if let Error::AlreadyClaimed(claim) = self {
            body["claim"] = serde_json::to_value(claim.view()).expect("claim view serialises");
        }
        body
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status(), self.code(), self.message())
    }
}

impl std::error::Error for Error {}
