//! One JSON error body for every refusal: responses that did not come from this crate's table
//! — axum's own rejections (a bad query string, bad JSON, a missing content type, a body too
//! large, no such route or method) or a handler's plain-text error — are rewritten by
//! [`Tenancy::layer`](crate::Tenancy::layer) into [`ErrorBody`](crate::ErrorBody).

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;

use crate::answer::json_refusal;

/// Longest rejection text read and passed on; axum's are a line.
const MAX_TEXT: usize = 4096;
/// Longest message kept from it.
const MAX_MESSAGE_CHARS: usize = 200;

/// `response` unchanged if it is not an error or is already JSON; else the same status with a
/// JSON body, its other headers (`Allow`, say) kept.
pub(crate) async fn uniform(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let message = if status.is_client_error() {
        // axum's rejection texts describe the client's own input, never the server.
        let text = axum::body::to_bytes(body, MAX_TEXT)
            .await
            .ok()
            .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
            .filter(|t| !t.is_empty());
        match text {
            Some(t) => t.chars().take(MAX_MESSAGE_CHARS).collect(),
            None => status
                .canonical_reason()
                .unwrap_or("refused")
                .to_lowercase(),
        }
    } else {
        // A server error's text may describe the server: not passed on.
        "the service failed to answer the request".to_owned()
    };
    let mut rewritten = json_refusal(status, code_for(status), message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().append(name, value.clone());
        }
    }
    rewritten
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The code of a refusal made elsewhere, named after its status.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_body",
        s if s.is_client_error() => "bad_request",
        _ => "internal_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn plain(status: StatusCode, text: &'static str) -> Response {
        let mut r = Response::new(Body::from(text));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        r
    }

    async fn body(r: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn plain_refusals_become_json_and_server_text_is_not_passed_on() {
        let r = uniform(plain(
            StatusCode::UNPROCESSABLE_ENTITY,
            "missing field `text`",
        ))
        .await;
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let b = body(r).await;
        assert_eq!(b["error"], "invalid_body");
        assert_eq!(b["message"], "missing field `text`");

        let r = uniform(plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "db at 10.0.0.7 died",
        ))
        .await;
        let b = body(r).await;
        assert_eq!(b["error"], "internal_error");
        assert!(!b["message"].as_str().unwrap().contains("10.0.0.7"));

        let mut empty = Response::new(Body::empty());
        *empty.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        empty
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET"));
        let r = uniform(empty).await;
        assert_eq!(r.headers()[header::ALLOW], "GET");
        assert_eq!(body(r).await["error"], "method_not_allowed");

        let ok = uniform(plain(StatusCode::OK, "fine")).await;
        assert_eq!(ok.status(), StatusCode::OK);
    }
}
