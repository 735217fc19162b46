//! Spin component: GET /healthz — liveness: 200 `ok`. No store, no variables,
//! no shared crate: it is also the ceiling the benchmarks measure against, so
//! it exports the WASI 0.3 handler directly (like every hongbao component).

#[cfg(target_arch = "wasm32")]
mod component {
    use spin_sdk::wasip3::http::types::{ErrorCode, Fields, Request, Response};
    use spin_sdk::wasip3::{wit_bindgen, wit_future, wit_stream};

    struct Healthz;
    spin_sdk::wasip3::http::service::export!(Healthz with_types_in spin_sdk::wasip3);

    impl spin_sdk::wasip3::exports::http::handler::Guest for Healthz {
        async fn handle(_request: Request) -> Result<Response, ErrorCode> {
            let headers = Fields::from_list(&[("content-type".into(), b"text/plain".to_vec())])
                .map_err(|_| ErrorCode::InternalError(None))?;
            let (mut body, contents) = wit_stream::new::<u8>();
            let (trailers_writer, trailers) = wit_future::new(|| Ok(None));
            let (response, _sent) = Response::new(headers, Some(contents), trailers);
            wit_bindgen::spawn(async move {
                body.write_all(b"ok".to_vec()).await;
                drop(trailers_writer);
            });
            Ok(response)
        }
    }
}
