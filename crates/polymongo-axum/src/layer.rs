//! [`TenancyLayer`]: the request deadline and the uniform JSON refusal, around every route.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use tower_layer::Layer;
use tower_service::Service;

use crate::answer::Answer;
use crate::deadline::{RequestClock, RequestLimits};
use crate::uniform::uniform;

/// The layer every router using [`Tenant`](crate::Tenant) or [`TenantDb`](crate::TenantDb)
/// must have: `Router::new()…​.layer(tenancy.layer())`, from
/// [`Tenancy::layer`](crate::Tenancy::layer).
///
/// For each request it:
/// - starts the request's clock: the extractors wait for a place in the tenant's pool at most
///   [`RequestLimits::queue`], and at [`RequestLimits::request`] after arrival whatever the
///   request still awaits is dropped — 503 `busy` with `Retry-After` while an extractor was
///   still preparing (nothing sent), else 504 `timeout` (the handler may have written);
/// - rewrites every error response that is not JSON (axum's own rejections, a plain-text
///   error) into the one [`ErrorBody`](crate::ErrorBody).
///
/// The extractors refuse a request that did not pass through it (500 `misconfigured`), so a
/// service cannot run without the bound by mistake.
#[derive(Debug, Clone, Copy)]
pub struct TenancyLayer {
    pub(crate) limits: RequestLimits,
}

impl<S> Layer<S> for TenancyLayer {
    type Service = TenancyService<S>;

    fn layer(&self, inner: S) -> TenancyService<S> {
        TenancyService {
            inner,
            limits: self.limits,
        }
    }
}

/// The service of [`TenancyLayer`].
#[derive(Debug, Clone)]
pub struct TenancyService<S> {
    inner: S,
    limits: RequestLimits,
}

impl<S> Service<Request> for TenancyService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let clock = Arc::new(RequestClock::start(self.limits));
        request.extensions_mut().insert(Arc::clone(&clock));
        // The clone that was driven ready is the one to call (tower's rule); a fresh clone
        // stays for the next request.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        Box::pin(async move {
            let response =
                match tokio::time::timeout_at(clock.deadline(), inner.call(request)).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => past_deadline(&clock),
                };
            Ok(uniform(response).await)
        })
    }
}

/// The answer for a request whose deadline passed (what it awaited is already dropped).
fn past_deadline(clock: &RequestClock) -> Response {
    let answer = if clock.nothing_sent() {
        Answer::Busy
    } else {
        Answer::Timeout
    };
    tracing::warn!(
        code = answer.code(),
        "request deadline passed; what it awaited was dropped"
    );
    answer.respond(answer.message().to_owned())
}
