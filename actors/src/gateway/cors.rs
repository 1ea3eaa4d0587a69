//! Owns cross-origin resource sharing on the client port, as etcd's `--cors` does it (etcd:
//! embed/serve.go `accessController.ServeHTTP` and `addCORSHeader`): every response carries
//! the `Access-Control-Allow-*` headers for an allowed origin, and every `OPTIONS` request is
//! answered `200` with them, so that a browser page may call the gateway.

use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::Arc;

use actix_web::body::EitherBody;
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::http::Method;
use actix_web::HttpResponse;
use futures_util::future::LocalBoxFuture;

/// The methods and headers etcd allows (`addCORSHeader`).
const ALLOW_METHODS: &str = "POST, GET, OPTIONS, PUT, DELETE";
const ALLOW_HEADERS: &str = "accept, content-type, authorization";

/// Which origins may call the gateway from a browser (etcd `--cors`): a middleware for an
/// actix-web `App` (`App::new().wrap(cors)`), which the server's client port applies with
/// [`super::Gateway::cors`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cors {
    /// `None`: every origin (`*`, etcd's default); else these, exactly as the `Origin` header
    /// names them (scheme, host and port). Empty: no CORS headers at all.
    origins: Option<Arc<[String]>>,
}

impl Default for Cors {
    /// etcd's default: every origin.
    fn default() -> Self {
        Self { origins: None }
    }
}

impl std::str::FromStr for Cors {
    type Err = String;

    /// etcd's `--cors` value: comma-separated origins, `*` for any; empty for none.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let origins: Vec<String> = s.split(',').map(str::trim).filter(|o| !o.is_empty()).map(String::from).collect();
        if origins.iter().any(|o| o == "*") {
            return Ok(Self::default());
        }
        if let Some(bad) = origins.iter().find(|o| !is_origin(o)) {
            // etcd's text for the same check (`types.NewURLs`).
            return Err(format!("URL address does not have the form \"host:port\": {bad}"));
        }
        Ok(Self { origins: Some(origins.into()) })
    }
}

/// Whether `s` is an origin as etcd's `--cors` takes one: an `http` or `https` URL with a
/// port and no path (etcd: pkg/types/urls.go `NewURLs`).
fn is_origin(s: &str) -> bool {
    let Ok(uri) = s.parse::<http::Uri>() else { return false };
    matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.authority().is_some_and(|a| a.port().is_some() && !a.host().is_empty())
        && matches!(uri.path(), "" | "/")
        && uri.query().is_none()
        && HeaderValue::from_str(s).is_ok()
}

impl std::fmt::Display for Cors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.origins {
            None => f.write_str("*"),
            Some(origins) => f.write_str(&origins.join(",")),
        }
    }
}

impl Cors {
    /// The `Access-Control-Allow-Origin` a request from `origin` gets, if any: `*` when every
    /// origin is allowed (etcd writes `*` whatever the request's origin), else the origin
    /// itself when it is one of the allowed.
    fn allowed(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match &self.origins {
            None => Some(HeaderValue::from_static("*")),
            Some(origins) => {
                let origin = origin?;
                let name = origin.to_str().ok()?;
                origins.iter().any(|o| o == name).then(|| origin.clone())
            }
        }
    }
}

fn add_headers(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOW_HEADERS));
}

impl<S, B> Transform<S, ServiceRequest> for Cors
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Transform = CorsService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(CorsService { service: Rc::new(service), cors: self.clone() }))
    }
}

/// [`Cors`] around one worker's service.
pub struct CorsService<S> {
    service: Rc<S>,
    cors: Cors,
}

impl<S, B> Service<ServiceRequest> for CorsService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error> + 'static,
    B: 'static,
{
    type Response = ServiceResponse<EitherBody<B>>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let allowed = self.cors.allowed(req.headers().get(header::ORIGIN));
        if req.method() == Method::OPTIONS {
            // etcd answers every OPTIONS itself, a browser's preflight included.
            let mut response = HttpResponse::Ok().finish();
            if let Some(origin) = allowed {
                add_headers(response.headers_mut(), origin);
            }
            return Box::pin(ready(Ok(req.into_response(response).map_into_right_body())));
        }
        let service = Rc::clone(&self.service);
        Box::pin(async move {
            let mut response = service.call(req).await?;
            if let Some(origin) = allowed {
                add_headers(response.headers_mut(), origin);
            }
            Ok(response.map_into_left_body())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_as_etcd_takes_them() {
        let any: Cors = "*".parse().expect("any");
        assert_eq!(any, Cors::default());
        assert_eq!(any.allowed(None), Some(HeaderValue::from_static("*")));
        let some: Cors = "http://a.example:80, https://b.example:8443".parse().expect("two");
        assert_eq!(some.to_string(), "http://a.example:80,https://b.example:8443");
        let b = HeaderValue::from_static("https://b.example:8443");
        assert_eq!(some.allowed(Some(&b)), Some(b.clone()));
        assert_eq!(some.allowed(Some(&HeaderValue::from_static("https://c.example"))), None);
        assert_eq!(some.allowed(None), None);
        let none: Cors = "".parse().expect("none");
        assert_eq!(none.allowed(Some(&b)), None);
        for bad in ["http://a\nb:1", "http://a.example", "a.example:80", "ftp://a.example:21", "http://a.example:80/x"]
        {
            assert!(bad.parse::<Cors>().is_err(), "{bad}");
        }
        assert_eq!("http://a.example:80,*".parse::<Cors>(), Ok(Cors::default()));
    }
}
