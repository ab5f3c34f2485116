//! W3C Trace Context (`traceparent`): read from incoming REST and gRPC calls, written on outgoing
//! webhook and language-model requests, so a caller's trace goes on through kefu and kefu's
//! through the services it calls.
//!
//! A malformed or unknown header is ignored (the call starts a trace of its own), never an error
//! to the caller: tracing must not change what a request does. Nothing here runs unless traces are
//! exported (`trace_export::enabled`).

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::base::trace_export;

/// The header's name (lowercase, as HTTP/2 and gRPC metadata carry it).
pub const TRACEPARENT: &str = "traceparent";

/// Headers as the propagator reads them.
struct Incoming<'a>(&'a HeaderMap);

impl Extractor for Incoming<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Headers as the propagator writes them.
struct Outgoing<'a>(&'a mut HeaderMap);

impl Injector for Outgoing<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` says nothing; it is left out, as before.
        if value.is_empty() {
            return;
        }
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(key.as_bytes()), HeaderValue::from_str(&value)) {
            self.0.insert(name, value);
        }
    }
}

/// The caller's span context, if the headers carry a valid `traceparent` (and its `tracestate`):
/// read by OpenTelemetry's W3C propagator, which ignores anything malformed (an unknown version
/// `ff`, uppercase or non-hex digits, an all-zero trace or span id) and keeps only the sampled flag.
pub fn from_headers(headers: &HeaderMap) -> Option<SpanContext> {
    let context = TraceContextPropagator::new().extract(&Incoming(headers));
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// Makes `span` a child of the caller named by `headers` (if any); a span already started or a
/// malformed header is left alone.
pub fn continue_from(span: &tracing::Span, headers: &HeaderMap) {
    if let Some(caller) = from_headers(headers) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(caller));
    }
}

/// The span every incoming call runs in when traces are exported (REST and gRPC alike), a child of
/// the caller's `traceparent` when it sends one; a disabled span otherwise, which costs nothing.
/// `protocol` is `http` or `grpc`; `route` the matched route or the gRPC method path.
pub fn incoming_call(protocol: &'static str, method: &str, route: &str, headers: &HeaderMap) -> tracing::Span {
    if !trace_export::enabled() {
        return tracing::Span::none();
    }
    let name = match protocol {
        "grpc" => route.trim_start_matches('/').to_owned(),
        _ if route.is_empty() => method.to_owned(),
        _ => format!("{method} {route}"),
    };
    let span = tracing::debug_span!(
        "call",
        otel.name = %name,
        otel.kind = "server",
        rpc.system = protocol,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    continue_from(&span, headers);
    span
}

/// Adds a `traceparent` naming the current span to an outgoing request, when traces are exported
/// and the current span is sampled; without a span to continue, nothing is added.
pub fn inject(headers: &mut HeaderMap) {
    if !trace_export::enabled() {
        return;
    }
    // Nothing for a context without a valid span (the propagator writes only valid ones).
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut Outgoing(headers));
}

/// [`inject`] for a request being built.
pub fn with_traceparent(request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    if !trace_export::enabled() {
        return request;
    }
    let mut headers = HeaderMap::new();
    inject(&mut headers);
    request.headers(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn parse(value: &[u8]) -> Option<SpanContext> {
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_bytes(value).unwrap());
        from_headers(&headers)
    }

    #[test]
    fn a_valid_traceparent_names_its_trace_and_span_and_is_written_back_the_same() {
        let context = parse(VALID.as_bytes()).expect("valid");
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_sampled() && context.is_remote());
        let mut written = HeaderMap::new();
        let parent = opentelemetry::Context::new().with_remote_span_context(context);
        TraceContextPropagator::new().inject_context(&parent, &mut Outgoing(&mut written));
        assert_eq!(written[TRACEPARENT], VALID);
        let unsampled = parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid");
        assert!(!unsampled.is_sampled());
        // A later version may add fields after a dash; the first four are read.
        assert!(parse(format!("01{}-extra", &VALID[2..]).as_bytes()).is_some());
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert!(parse(bad.as_bytes()).is_none(), "{bad:?}");
        }
        assert!(parse(b"00-\xff\xfe").is_none());
        assert!(from_headers(&HeaderMap::new()).is_none());
    }
}
