//! Spin component: GET /v1/admin/reconcile — reconciliation (对账).
//! Thin by design: everything but the HTTP plumbing lives in `hongbao`.

hongbao_spin::component!(Reconcile);
