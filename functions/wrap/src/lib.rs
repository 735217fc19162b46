//! Spin component: POST /v1/packets — wrap (包) a new packet.
//! Thin by design: everything but the HTTP plumbing lives in `hongbao`.

hongbao_spin::component!(Wrap);
