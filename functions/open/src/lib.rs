//! Spin component: POST /v1/packets/{id}/open — open (拆): the money-moving step.
//! Thin by design: everything but the HTTP plumbing lives in `hongbao`.

hongbao_spin::component!(Open);
