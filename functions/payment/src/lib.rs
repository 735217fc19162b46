//! Spin component: POST /v1/packets/{id}/payment — send (发): the payment system's signed callback.
//! Thin by design: everything but the HTTP plumbing lives in `hongbao`.

hongbao_spin::component!(Payment);
