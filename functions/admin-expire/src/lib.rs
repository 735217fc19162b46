//! Spin component: POST /v1/admin/expire — the refund sweep.
//! Thin by design: everything but the HTTP plumbing lives in `hongbao`.

hongbao_spin::component!(Expire);
