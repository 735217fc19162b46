//! Spin component: GET /v1/packets/{id}, GET /v1/users/me/sent|received — query (查); also the catch-all that answers the contract's 404 for unknown paths.
//! Thin by design: everything but the HTTP plumbing lives in `hongbao`.

hongbao_spin::component!(Query, Sent, Received);
