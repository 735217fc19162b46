//! Money is an integer number of fen. There are no floats on any money path:
//! every amount is a `Fen`, and arithmetic is checked so an overflow or an
//! underflow is an error instead of silently wrong money.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount in fen (1 CNY = 100 fen). Never negative.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fen(pub u64);

impl Fen {
    pub const ZERO: Fen = Fen(0);

    pub fn checked_add(self, other: Fen) -> Option<Fen> {
        self.0.checked_add(other.0).map(Fen)
    }

    pub fn checked_sub(self, other: Fen) -> Option<Fen> {
        self.0.checked_sub(other.0).map(Fen)
    }

    pub fn checked_mul(self, n: u64) -> Option<Fen> {
        self.0.checked_mul(n).map(Fen)
    }

    /// Sum of amounts, `None` on overflow.
    pub fn sum<I: IntoIterator<Item = Fen>>(items: I) -> Option<Fen> {
        items.into_iter().try_fold(Fen::ZERO, Fen::checked_add)
    }
}

impl fmt::Display for Fen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} fen", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_checked() {
        assert_eq!(Fen(5).checked_sub(Fen(6)), None);
        assert_eq!(Fen(u64::MAX).checked_add(Fen(1)), None);
        assert_eq!(Fen(3).checked_mul(4), Some(Fen(12)));
        assert_eq!(Fen::sum([Fen(1), Fen(2), Fen(3)]), Some(Fen(6)));
        assert_eq!(Fen::sum([Fen(u64::MAX), Fen(1)]), None);
    }

    #[test]
    fn serialises_as_a_bare_integer() {
        assert_eq!(serde_json::to_string(&Fen(1234)).unwrap(), "1234");
        assert_eq!(serde_json::from_str::<Fen>("7").unwrap(), Fen(7));
        assert!(serde_json::from_str::<Fen>("-7").is_err());
        assert!(serde_json::from_str::<Fen>("7.5").is_err());
    }
}
