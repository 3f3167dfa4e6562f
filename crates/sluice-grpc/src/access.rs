//! Authentication and authorization of gRPC calls: the `authorization` metadata value is
//! checked against the node's access keys (see `sluice_auth::token`), then the caller's
//! policies are asked whether the call's action is allowed on its resource, with the same
//! action names as the Kinesis API.

use sluice_auth::sigv4::SigV4Error;
use sluice_cluster::{Broker, Caller};
use tonic::{Request, Status};

/// Decides who may call what. Cheap to clone; one per service.
#[derive(Clone)]
pub struct Access {
    broker: Broker,
    enabled: bool,
}

impl Access {
    /// `enabled == false` accepts every call, as the open single-node default does.
    pub fn new(broker: Broker, enabled: bool) -> Self {
        Access { broker, enabled }
    }

    /// The authenticated caller, or `None` when authentication is off.
    pub(crate) fn caller<T>(&self, request: &Request<T>) -> Result<Option<Caller>, Status> {
        if !self.enabled {
            return Ok(None);
        }
        let path = request
            .extensions()
            .get::<MethodPath>()
            .map(|p| p.0.clone())
            .unwrap_or_default();
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let now_secs = i64::try_from(self.broker.now_ms() / 1000).unwrap_or(i64::MAX);
        let access_key_id =
            sluice_auth::token::verify(header, &path, now_secs, |id| self.broker.secret_of(id))
                .map_err(unauthenticated)?;
        let caller = self.broker.caller(&access_key_id).ok_or_else(|| {
            unauthenticated(SigV4Error::UnrecognizedClient(
                "The security token included in the request is invalid.".into(),
            ))
        })?;
        Ok(Some(caller))
    }

    /// Authenticates the call and checks `action` on `resource`.
    pub(crate) fn check<T>(
        &self,
        request: &Request<T>,
        action: &str,
        resource: &str,
    ) -> Result<Option<Caller>, Status> {
        let caller = self.caller(request)?;
        if let Some(caller) = &caller {
            self.broker
                .authorize(caller, action, resource)
                .map_err(crate::status_of)?;
        }
        Ok(caller)
    }

    /// Authenticates the call and checks `action` on the named stream.
    pub(crate) fn check_stream<T>(
        &self,
        request: &Request<T>,
        action: &str,
        stream: &str,
    ) -> Result<Option<Caller>, Status> {
        let arn = self.broker.stream_arn(stream);
        self.check(request, action, &arn)
    }
}

fn unauthenticated(error: SigV4Error) -> Status {
    let kind = match &error {
        SigV4Error::MissingAuthenticationToken(_) => "MissingAuthenticationTokenException",
        SigV4Error::IncompleteSignature(_) => "IncompleteSignatureException",
        SigV4Error::InvalidSignature(_) => "InvalidSignatureException",
        SigV4Error::UnrecognizedClient(_) => "UnrecognizedClientException",
    };
    let mut status = Status::unauthenticated(error.to_string());
    status.metadata_mut().insert(
        crate::ERROR_TYPE_KEY,
        tonic::metadata::MetadataValue::from_static(kind),
    );
    status
}

/// The path of the gRPC method a request calls (`/sluice.v1.Streams/CreateStream`), which
/// tonic's server does not hand to handlers; signatures are bound to it.
#[derive(Debug, Clone)]
pub(crate) struct MethodPath(pub String);

/// Wraps a tonic service so every request carries its [`MethodPath`].
#[derive(Debug, Clone)]
pub struct WithMethodPath<S> {
    inner: S,
}

impl<S> WithMethodPath<S> {
    pub fn new(inner: S) -> Self {
        WithMethodPath { inner }
    }
}

impl<S, B> tower::Service<http::Request<B>> for WithMethodPath<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> S::Future {
        let path = request.uri().path().to_owned();
        request.extensions_mut().insert(MethodPath(path));
        self.inner.call(request)
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for WithMethodPath<S> {
    const NAME: &'static str = S::NAME;
}
