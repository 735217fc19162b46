//! Spin component: POST /v1/admin/purge — the retention purge of a day's packets.
//! Thin by design: everything but the HTTP plumbing lives in `hongbao`.

hongbao_spin::component!(Purge);
