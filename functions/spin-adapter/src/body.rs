//! Reading a request body without ever holding more than the contract's
//! limit: a declared `content-length` over the limit is refused before
//! reading, and a streamed body is cut off as soon as it passes the limit.

use hongbao::Error;
use hongbao::api::MAX_BODY_BYTES;

/// Reads the body of `request`, at most `MAX_BODY_BYTES`.
#[cfg(target_arch = "wasm32")]
pub async fn read_limited(
    request: spin_sdk::wasip3::http::types::Request,
    header: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<u8>, Error> {
    use spin_sdk::wasip3::http::types::Request;
    use spin_sdk::wasip3::wit_bindgen::StreamResult;
    let declared = header("content-length");
    check_declared_length(declared.as_deref())?;
    // A request with neither content-length nor transfer-encoding has no
    // body (HTTP/1.1): skip the stream, which costs several host round trips.
    if declared.is_none() && header("transfer-encoding").is_none() || declared.as_deref() == Some("0") {
        return Ok(Vec::new());
    }
    let length: Option<usize> = declared.as_deref().and_then(|v| v.trim().parse().ok());
    let (_done, done_reader) = spin_sdk::wasip3::wit_future::new(|| Ok(()));
    let (mut stream, _trailers) = Request::consume_body(request, done_reader);
    let mut body = Vec::new();
    loop {
        let want = length.map_or(16 * 1024, |n| n.saturating_sub(body.len()).clamp(1, MAX_BODY_BYTES));
        let (result, chunk) = stream.read(Vec::with_capacity(want)).await;
        append_within_limit(&mut body, &chunk)?;
        // The declared length is all there is (the host checks it): no
        // further read just to learn that the stream has ended.
        if length == Some(body.len()) {
            return Ok(body);
        }
        match result {
            StreamResult::Complete(_) => continue,
            StreamResult::Dropped | StreamResult::Cancelled => return Ok(body),
        }
    }
}

/// Native builds (unit tests) have no WASI request to read.
#[cfg(not(target_arch = "wasm32"))]
pub async fn read_limited(
    _request: spin_sdk::wasip3::http::types::Request,
    _header: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<u8>, Error> {
    unreachable!("components run only as wasm32")
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub fn check_declared_length(content_length: Option<&str>) -> Result<(), Error> {
    match content_length.and_then(|v| v.trim().parse::<u64>().ok()) {
        Some(n) if n > MAX_BODY_BYTES as u64 => Err(Error::PayloadTooLarge),
        _ => Ok(()),
    }
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub fn append_within_limit(body: &mut Vec<u8>, chunk: &[u8]) -> Result<(), Error> {
    if body.len() + chunk.len() > MAX_BODY_BYTES {
        return Err(Error::PayloadTooLarge);
    }
    body.extend_from_slice(chunk);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_oversize_is_refused_before_reading() {
        assert_eq!(check_declared_length(Some(&(MAX_BODY_BYTES + 1).to_string())), Err(Error::PayloadTooLarge));
        assert_eq!(check_declared_length(Some(&MAX_BODY_BYTES.to_string())), Ok(()));
        assert_eq!(check_declared_length(None), Ok(()));
        assert_eq!(check_declared_length(Some("junk")), Ok(()), "a bad header is left to the stream limit");
    }

    #[test]
    fn streamed_oversize_is_cut_off_at_the_limit() {
        let mut body = Vec::new();
        let chunk = vec![b' '; 16 * 1024];
        for _ in 0..MAX_BODY_BYTES / chunk.len() {
            append_within_limit(&mut body, &chunk).unwrap();
        }
        assert_eq!(body.len(), MAX_BODY_BYTES);
        assert_eq!(append_within_limit(&mut body, b"x"), Err(Error::PayloadTooLarge));
        assert_eq!(body.len(), MAX_BODY_BYTES, "nothing past the limit is kept");
    }
}
