//! Spin component: POST /v1/admin/settle — wallet credit (入账).
//! Thin by design: everything but the HTTP plumbing lives in `hongbao`.

hongbao_spin::component!(Settle);
