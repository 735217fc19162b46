//! The application variables of the contract (Spin application variables;
//! the test host supplies the same names), parsed and checked once.

use crate::error::Error;
use crate::id::SETS;
use crate::keys;
use crate::record::Strategy;

pub struct Variable {
    pub name: &'static str,
    /// `None`: required.
    pub default: Option<&'static str>,
    pub secret: bool,
    pub meaning: &'static str,
}

/// Every variable the functions read. `spin.toml` must declare exactly these
/// (a test checks it).
pub const VARIABLES: &[Variable] = &[
    Variable { name: "auth_secret", default: None, secret: true, meaning: "HS256 key for user JWTs" },
    Variable { name: "payment_secret", default: None, secret: true, meaning: "HMAC key of payment callbacks" },
    Variable { name: "admin_token", default: None, secret: true, meaning: "bearer token of admin endpoints" },
    Variable {
        name: "packet_ttl_seconds",
        default: Some("86400"),
        secret: false,
        meaning: "life of a paid packet before its remainder is refunded (at most 14 days)",
    },
    Variable { name: "max_count", default: Some("100"), secret: false, meaning: "most shares in one packet" },
    Variable {
        name: "max_share_fen",
        default: Some("20000"),
        secret: false,
        meaning: "most average fen per share (total_fen <= max_share_fen * count)",
    },
    Variable {
        name: "max_unpaid_per_user",
        default: Some("20"),
        secret: false,
        meaning: "most packets a user may have wrapped today (UTC) and not paid yet",
    },
    Variable {
        name: "admission_limit",
        default: Some("5000"),
        secret: false,
        meaning: "grab+open requests admitted per packet per second before 429 busy",
    },
    Variable {
        name: "kv_batch_reads",
        default: Some("true"),
        secret: false,
        meaning: "whether the key-value store's batch reads (get-many) work: false for Spin 4.0.2's Redis store, whose get-many fails (reads then go one key at a time)",
    },
    Variable {
        name: "open_strategy",
        default: Some("auto"),
        secret: false,
        meaning: "how new packets serialize opens: cas (compare-and-set of the packet), cursor (pre-allocated shares), or auto (cursor from 100 shares, cas below)",
    },
    Variable {
        name: "kv_layout",
        default: Some("single"),
        secret: false,
        meaning: "where keys live: single (all in the store labelled default) or sets (SET n's packet keys in store setN, the rest in users: spin.sets.toml)",
    },
    Variable {
        name: "retention_days",
        default: Some("31"),
        secret: false,
        meaning: "days a day's packets are kept before the purge may delete them (at least 31, the days the sweeps look back; the day's reconciliation report is kept)",
    },
    Variable {
        name: "placement_cache_seconds",
        default: Some("5"),
        secret: false,
        meaning: "how long an instance places new packets by the SETs it last read as open (0: read on every wrap); a drain takes effect everywhere within this time",
    },
    Variable {
        name: "demo_mode",
        default: Some("false"),
        secret: false,
        meaning: "serve the demo page at /demo/ and its sign-in and payment endpoints: anyone may then sign in as anyone and pay without paying; never true in production",
    },
];

/// A packet's whole money life (payment window + TTL + sweep) must fit in the
/// hot day-tables the sweeps scan, hence the cap on the TTL.
pub const MAX_TTL_SECONDS: i64 = 14 * 86_400;

/// Day-tables a sweep looks at (the seeds' `dd` cycle). A packet's money all
/// moves within payment window + TTL (at most 2 x 14 days, plus the clock
/// skew margin) of its creation, so 31 days leave nearly three days of slack
/// for a sweeper that was down. Also the shortest retention: the purge never
/// deletes a day the sweeps may still visit.
pub const HOT_DAYS: i64 = 31;

/// Keys one purge call lists before it answers with a cursor to go on
/// from: a bound on one request's work and memory, however big the store
/// (on stores that page; Spin's answer in one page).
pub const KEYS_LISTED_PER_CALL: usize = 20_000;

/// The secret variables, each needed only by some endpoints (see
/// `http::secrets`): spin.toml hands a component only the ones it uses.
pub fn secrets() -> impl Iterator<Item = &'static str> {
    VARIABLES.iter().filter(|v| v.secret).map(|v| v.name)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Secrets this component was not given are `None`.
    auth_secret: Option<String>,
    payment_secret: Option<String>,
    admin_token: Option<String>,
    pub packet_ttl_seconds: i64,
    pub max_count: u32,
    pub max_share_fen: u64,
    pub max_unpaid_per_user: u32,
    pub admission_limit: i64,
    pub open_strategy: OpenStrategy,
    /// Whether the store's `get-many` may be used (see `VARIABLES`).
    pub kv_batch_reads: bool,
    pub kv_layout: KvLayout,
    /// Whether the demo page and its two endpoints answer (else 404).
    pub demo_mode: bool,
    /// Days a day's packets are kept before the purge may delete them.
    pub retention_days: i64,
    /// Seconds an instance places packets by its copy of the open SETs.
    pub placement_cache_seconds: i64,
    /// Keys one purge call lists before it answers a cursor: not a
    /// variable (`KEYS_LISTED_PER_CALL`), but tests make it small.
    pub purge_keys_per_call: usize,
}

/// The `kv_layout` variable: which store label a key lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvLayout {
    /// Every key in `default` (spin.toml).
    Single,
    /// SET n's packet keys in `setN`, every other key in `users`, so each
    /// SET can have a store (a Redis server) of its own (spin.sets.toml).
    PerSet,
}

impl KvLayout {
    pub fn parse(s: &str) -> Option<KvLayout> {
        match s {
            "single" => Some(KvLayout::Single),
            "sets" => Some(KvLayout::PerSet),
            _ => None,
        }
    }

    /// The store labels of the layout, as a manifest grants them.
    pub fn labels(self) -> &'static [&'static str] {
        match self {
            KvLayout::Single => &["default"],
            KvLayout::PerSet => {
                &["set0", "set1", "set2", "set3", "set4", "set5", "set6", "set7", "set8", "set9", "users"]
            }
        }
    }

    /// The replica of each of `labels()`, in the same order (`set3_replica`
    /// is SET 3's): a store only read, by the user-facing reads, when the
    /// primary fails (answers marked `degraded`); none for `single`.
    pub fn replica_labels(self) -> &'static [&'static str] {
        match self {
            KvLayout::Single => &[],
            KvLayout::PerSet => &[
                "set0_replica",
                "set1_replica",
                "set2_replica",
                "set3_replica",
                "set4_replica",
                "set5_replica",
                "set6_replica",
                "set7_replica",
                "set8_replica",
                "set9_replica",
                "users_replica",
            ],
        }
    }

    /// Which of `labels()` holds `key`: its SET's, else the last (`users`).
    pub fn label_index(self, key: &str) -> usize {
        match self {
            KvLayout::Single => 0,
            KvLayout::PerSet => keys::set_of(key).map_or(SETS as usize, |set| set as usize),
        }
    }
}

/// The `open_strategy` variable: one strategy for every new packet, or
/// `auto`, which picks by the packet's share count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenStrategy {
    Fixed(Strategy),
    /// Cursor for packets of `AUTO_CURSOR_FROM_COUNT` shares or more, cas
    /// below. A packet's contention is bounded by its share count (only that
    /// many opens write). Where contention is low cas does less work (7 store
    /// calls per open against 10, two writes fewer) and has no crash window;
    /// where it is high cursor is far ahead (BENCHMARKS.md, "Choosing the
    /// default").
    Auto,
}

impl OpenStrategy {
    pub const AUTO_CURSOR_FROM_COUNT: u32 = 100;

    pub fn parse(s: &str) -> Option<OpenStrategy> {
        match s {
            "auto" => Some(OpenStrategy::Auto),
            _ => Strategy::parse(s).map(OpenStrategy::Fixed),
        }
    }

    /// The strategy a new packet of `count` shares is wrapped with.
    pub fn for_count(self, count: u32) -> Strategy {
        match self {
            OpenStrategy::Fixed(strategy) => strategy,
            OpenStrategy::Auto if count >= OpenStrategy::AUTO_CURSOR_FROM_COUNT => Strategy::Cursor,
            OpenStrategy::Auto => Strategy::Cas,
        }
    }
}

impl From<Strategy> for OpenStrategy {
    fn from(strategy: Strategy) -> Self {
        OpenStrategy::Fixed(strategy)
    }
}

impl Config {
    /// Reads every variable through `lookup` (which returns `None` for an
    /// unset variable); defaults apply where the contract gives one. Every
    /// secret is required.
    pub fn load(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
        Config::load_for(&secrets().collect::<Vec<_>>(), lookup)
    }

    /// As `load`, but requires only the secrets named in `secrets` and reads
    /// no other (a component is given only the secrets its endpoints use).
    pub fn load_for(secrets: &[&str], lookup: impl Fn(&str) -> Option<String>) -> Result<Config, Error> {
        let value = |name: &str| -> Result<String, Error> {
            let var = VARIABLES.iter().find(|v| v.name == name).expect("known variable");
            match lookup(name).filter(|v| !v.is_empty()).or(var.default.map(str::to_owned)) {
                Some(v) => Ok(v),
                None => Err(Error::Internal(format!("variable {name} is required but not set"))),
            }
        };
        let secret = |name: &str| secrets.contains(&name).then(|| value(name)).transpose();
        fn number<T: std::str::FromStr + PartialOrd>(name: &str, text: String, min: T, max: T) -> Result<T, Error> {
            match text.trim().parse::<T>() {
                Ok(n) if n >= min && n <= max => Ok(n),
                _ => Err(Error::Internal(format!("variable {name} is out of range: {text}"))),
            }
        }
        Ok(Config {
            auth_secret: secret("auth_secret")?,
            payment_secret: secret("payment_secret")?,
            admin_token: secret("admin_token")?,
            packet_ttl_seconds: number("packet_ttl_seconds", value("packet_ttl_seconds")?, 1, MAX_TTL_SECONDS)?,
            max_count: number("max_count", value("max_count")?, 1, 100_000)?,
            max_share_fen: number("max_share_fen", value("max_share_fen")?, 1, 1_000_000_000)?,
            max_unpaid_per_user: number("max_unpaid_per_user", value("max_unpaid_per_user")?, 1, 1_000_000)?,
            admission_limit: number("admission_limit", value("admission_limit")?, 1, i64::MAX)?,
            kv_batch_reads: flag("kv_batch_reads", value("kv_batch_reads")?)?,
            demo_mode: flag("demo_mode", value("demo_mode")?)?,
            retention_days: number("retention_days", value("retention_days")?, HOT_DAYS, 36_500)?,
            placement_cache_seconds: number("placement_cache_seconds", value("placement_cache_seconds")?, 0, 300)?,
            purge_keys_per_call: KEYS_LISTED_PER_CALL,
            kv_layout: {
                let text = value("kv_layout")?;
                KvLayout::parse(text.trim())
                    .ok_or_else(|| Error::Internal(format!("variable kv_layout must be single or sets, not {text}")))?
            },
            open_strategy: {
                let text = value("open_strategy")?;
                OpenStrategy::parse(text.trim()).ok_or_else(|| {
                    Error::Internal(format!("variable open_strategy must be cas, cursor or auto, not {text}"))
                })?
            },
        })
    }

    /// The key of user JWTs and (derived) of grab tickets.
    pub fn auth_secret(&self) -> Result<&str, Error> {
        given(&self.auth_secret, "auth_secret")
    }

    /// The HMAC key of payment callbacks.
    pub fn payment_secret(&self) -> Result<&str, Error> {
        given(&self.payment_secret, "payment_secret")
    }

    /// The bearer token of the admin endpoints.
    pub fn admin_token(&self) -> Result<&str, Error> {
        given(&self.admin_token, "admin_token")
    }

    /// A configuration for tests: fixed secrets, contract defaults.
    #[cfg(any(test, feature = "testing"))]
    pub fn for_tests() -> Config {
        Config::load(|name| match name {
            "auth_secret" => Some("test-auth-secret".into()),
            "payment_secret" => Some("test-payment-secret".into()),
            "admin_token" => Some("test-admin-token".into()),
            _ => None,
        })
        .expect("test config is valid")
    }
}

fn flag(name: &str, text: String) -> Result<bool, Error> {
    match text.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(Error::Internal(format!("variable {name} must be true or false, not {other}"))),
    }
}

/// A secret this component was not given is a deployment error (spin.toml),
/// never a reason to accept a request unchecked.
fn given<'c>(secret: &'c Option<String>, name: &str) -> Result<&'c str, Error> {
    secret.as_deref().ok_or_else(|| Error::Internal(format!("variable {name} is not given to this component")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every secret given, `name` set to `value`, the rest by default.
    fn loaded_with(name: &str, value: &str) -> Result<Config, Error> {
        Config::load(|n| match n {
            _ if n == name => Some(value.into()),
            _ if n.ends_with("secret") || n == "admin_token" => Some("x".into()),
            _ => None,
        })
    }

    #[test]
    fn defaults_apply_and_secrets_are_required() {
        let c = Config::for_tests();
        assert_eq!((c.packet_ttl_seconds, c.max_count, c.max_share_fen), (86_400, 100, 20_000));
        let missing = Config::load(|n| (n != "admin_token").then(|| "x".to_string()).filter(|_| n.ends_with("secret")));
        assert!(matches!(missing, Err(Error::Internal(m)) if m.contains("admin_token")));
    }

    #[test]
    fn a_component_reads_and_requires_only_its_own_secrets() {
        let every_secret = |name: &str| secrets().any(|s| s == name).then(|| format!("value of {name}"));
        let open = Config::load_for(&["auth_secret"], every_secret).unwrap();
        assert_eq!(open.auth_secret().unwrap(), "value of auth_secret");
        assert!(matches!(open.admin_token(), Err(Error::Internal(m)) if m.contains("admin_token")));
        assert!(open.payment_secret().is_err());
        assert_eq!(open.max_count, 100, "the other variables load as before");
        let without = Config::load_for(&["admin_token"], |n| (n != "admin_token").then(|| every_secret(n)).flatten());
        assert!(matches!(without, Err(Error::Internal(m)) if m.contains("admin_token is required")));
        assert!(Config::load_for(&[], |_| None).is_ok(), "no secrets needed, none required");
    }

    #[test]
    fn open_strategy_is_auto_by_default_and_picks_by_share_count() {
        let with = |strategy: &str| loaded_with("open_strategy", strategy);
        let auto = Config::for_tests().open_strategy;
        assert_eq!(auto, OpenStrategy::Auto);
        let from = OpenStrategy::AUTO_CURSOR_FROM_COUNT;
        assert_eq!(auto.for_count(1), Strategy::Cas);
        assert_eq!(auto.for_count(from - 1), Strategy::Cas);
        assert_eq!(auto.for_count(from), Strategy::Cursor);
        assert_eq!(auto.for_count(100_000), Strategy::Cursor);
        for count in [1, from - 1, from, 1_000] {
            assert_eq!(with("cas").unwrap().open_strategy.for_count(count), Strategy::Cas);
            assert_eq!(with(" cursor ").unwrap().open_strategy.for_count(count), Strategy::Cursor);
        }
        assert!(matches!(with("fastest"), Err(Error::Internal(m)) if m.contains("cas, cursor or auto")));
    }

    #[test]
    fn batch_reads_are_on_unless_turned_off() {
        let with = |value: &str| loaded_with("kv_batch_reads", value);
        assert!(Config::for_tests().kv_batch_reads);
        assert_eq!(Config::for_tests().kv_layout, KvLayout::Single);
        assert!(!with("false").unwrap().kv_batch_reads);
        assert!(matches!(with("no"), Err(Error::Internal(m)) if m.contains("kv_batch_reads")));
    }

    #[test]
    fn retention_is_a_month_unless_set_and_never_shorter_than_the_sweeps_look_back() {
        assert_eq!(Config::for_tests().retention_days, 31);
        assert_eq!(loaded_with("retention_days", "90").unwrap().retention_days, 90);
        assert!(matches!(loaded_with("retention_days", "30"), Err(Error::Internal(m)) if m.contains("retention_days")));
    }

    #[test]
    fn demo_mode_is_off_unless_turned_on() {
        let with = |value: &str| loaded_with("demo_mode", value);
        assert!(!Config::for_tests().demo_mode);
        assert!(with("true").unwrap().demo_mode);
        assert!(!with("false").unwrap().demo_mode);
        assert!(matches!(with("yes"), Err(Error::Internal(m)) if m.contains("demo_mode must be true or false")));
    }

    #[test]
    fn numbers_are_range_checked() {
        let with = |ttl: &str| loaded_with("packet_ttl_seconds", ttl);
        assert_eq!(with("60").unwrap().packet_ttl_seconds, 60);
        assert!(with("0").is_err());
        assert!(with("abc").is_err());
        assert!(with(&(MAX_TTL_SECONDS + 1).to_string()).is_err());
    }
}
