//! W3C Trace Context (`traceparent`): read from incoming REST and gRPC calls, written on outgoing
//! webhook and language-model requests, so a caller's trace goes on through kefu and kefu's
//! through the services it calls.
//!
//! A malformed or unknown header is ignored (the call starts a trace of its own), never an error
//! to the caller: tracing must not change what a request does. Nothing here runs unless traces are
//! exported (`trace_export::enabled`).

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use reqwest::header::{HeaderMap, HeaderValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::base::trace_export;

/// The header's name (lowercase, as HTTP/2 and gRPC metadata carry it).
pub const TRACEPARENT: &str = "traceparent";

/// The length of a version-00 `traceparent`: `00-` 32 hex digits `-` 16 hex digits `-` 2 hex digits.
const VERSION_00_LEN: usize = 55;

/// Reads a `traceparent` value; `None` for anything malformed (wrong length or separators,
/// uppercase or non-hex digits, the forbidden version `ff`, an all-zero trace or span id).
/// Versions after 00 are read by their first four fields, as the specification asks.
pub fn parse(value: &str) -> Option<SpanContext> {
    let bytes = value.as_bytes();
    if bytes.len() < VERSION_00_LEN {
        return None;
    }
    let version = value.get(0..2)?;
    let lower_hex = |text: &str| text.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'));
    if !lower_hex(version) || version == "ff" {
        return None;
    }
    if version == "00" && bytes.len() != VERSION_00_LEN {
        return None;
    }
    if bytes.len() > VERSION_00_LEN && bytes[VERSION_00_LEN] != b'-' {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let (trace, span, flags) = (value.get(3..35)?, value.get(36..52)?, value.get(53..55)?);
    if !lower_hex(trace) || !lower_hex(span) || !lower_hex(flags) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    // Only the sampled bit is defined; the others are not passed on.
    let flags = TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8());
    Some(SpanContext::new(trace_id, span_id, flags, true, TraceState::default()))
}

/// The `traceparent` value naming `context` as the parent.
pub fn format(context: &SpanContext) -> String {
    format!("00-{}-{}-{:02x}", context.trace_id(), context.span_id(), context.trace_flags().to_u8())
}

/// The caller's span context, if the headers carry a valid `traceparent`.
pub fn from_headers(headers: &HeaderMap) -> Option<SpanContext> {
    headers.get(TRACEPARENT).and_then(|value| value.to_str().ok()).and_then(parse)
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
    let context = tracing::Span::current().context();
    let span = context.span();
    let span_context = span.span_context();
    if !span_context.is_valid() {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(&format(span_context)) {
        headers.insert(TRACEPARENT, value);
    }
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

    #[test]
    fn a_valid_traceparent_names_its_trace_and_span() {
        let context = parse(VALID).expect("valid");
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_sampled() && context.is_remote());
        assert_eq!(format(&context), VALID);
        let unsampled = parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid");
        assert!(!unsampled.is_sampled());
        // A later version may add fields after a dash; the first four are read.
        assert!(parse(&format!("01{}-extra", &VALID[2..])).is_some());
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "garbage",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\u{e9}",
            "00-4bf92f3577b34da6a3ce929\u{e9}e0e4736-00f067aa0ba902b7-01",
        ] {
            assert!(parse(bad).is_none(), "{bad:?}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(TRACEPARENT, HeaderValue::from_bytes(b"00-\xff\xfe").unwrap());
        assert!(from_headers(&headers).is_none());
        assert!(from_headers(&HeaderMap::new()).is_none());
    }
}
