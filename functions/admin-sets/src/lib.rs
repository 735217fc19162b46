//! Spin component: GET and POST /v1/admin/sets — which SETs take new packets:
//! drain a SET, restore it, read the log of changes.
//! Thin by design: everything but the HTTP plumbing lives in `hongbao`.

hongbao_spin::component!(Placement, SetChange);
