//! What a caller chooses before loading an app: where its key-value data
//! lives, and how instances are reused and requests bounded while serving.

use std::path::PathBuf;
use std::time::Duration;

/// Where key-value data lives.
#[derive(Debug, Clone)]
pub enum StoreChoice {
    /// Gone when the process exits (`--memory`).
    Memory,
    /// `DIR/sqlite_key_value.db`, Spin's default file and table (`--state-dir`, default `.spin`).
    Durable(PathBuf),
}

/// Enough to keep both cores busy while some running requests sleep (CAS
/// backoff), few enough that a burst reuses a handful of instances; the
/// bench found 16 better than 8, 32 or 64. (The commit wait holds no permit.)
pub const DEFAULT_MAX_RUNNING_REQUESTS: usize = 16;

/// Instance reuse, as `spin up`'s flags of the same names, and the bound on
/// requests running at once.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub max_instance_reuse_count: usize,
    pub max_instance_concurrent_reuse_count: usize,
    pub idle_instance_timeout: Duration,
    pub request_timeout: Option<Duration>,
    /// Requests running in components at once; the rest wait in arrival
    /// order, holding no instance, until one finishes (0: no bound). A
    /// burst of N clients otherwise needs N instances at once (one request
    /// per instance), and creating them costs more than serving the burst.
    pub max_running_requests: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_instance_reuse_count: 128,
            max_instance_concurrent_reuse_count: 1,
            idle_instance_timeout: Duration::from_secs(1),
            request_timeout: None,
            max_running_requests: DEFAULT_MAX_RUNNING_REQUESTS,
        }
    }
}
