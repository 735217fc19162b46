//! Spin component: GET /v1/users/me/wallet — the user's settled credits.
//! Thin by design: everything but the HTTP plumbing lives in `hongbao`.

hongbao_spin::component!(Wallet);
