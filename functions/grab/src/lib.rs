//! Spin component: POST /v1/packets/{id}/grab — grab (抢): the cheap qualification check.
//! Thin by design: everything but the HTTP plumbing lives in `hongbao`.

hongbao_spin::component!(Grab);
