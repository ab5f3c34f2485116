//! Traces exported over OTLP: a real `kefu serve` process (the exporting subscriber is
//! process-wide) sends its spans to a small OTLP/HTTP receiver run by the test. A visitor's message
//! is one trace with a span per stage, its id the message's logged `trace_id`; the webhook about
//! it continues that trace and carries `traceparent`; REST and gRPC calls join their caller's trace; an
//! unreachable collector leaves messages flowing and counts the dropped spans.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use prost::Message as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio_tungstenite::tungstenite::Message;

use crate::crash::{admin, kefu, visitor_session, visitor_socket};
use crate::support::{PASSWORD, http};

/// One span as the receiver decoded it (ids in lowercase hex, as a traceparent writes them).
#[derive(Clone, Debug)]
struct ReceivedSpan {
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    attributes: HashMap<String, String>,
}

/// An OTLP/HTTP traces receiver on a free port, keeping every span it is sent.
struct Collector {
    endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

async fn collector() -> Collector {
    let spans = Arc::new(Mutex::new(Vec::new()));
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: bytes::Bytes| {
            let kept = kept.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                let mut kept = kept.lock().unwrap();
                for span in request
                    .resource_spans
                    .iter()
                    .flat_map(|resource| &resource.scope_spans)
                    .flat_map(|scope| &scope.spans)
                {
                    let attributes = span
                        .attributes
                        .iter()
                        .map(|attribute| {
                            let value = match attribute.value.as_ref().and_then(|value| value.value.as_ref()) {
                                Some(AnyValue::StringValue(text)) => text.clone(),
                                Some(AnyValue::IntValue(number)) => number.to_string(),
                                Some(other) => format!("{other:?}"),
                                None => String::new(),
                            };
                            (attribute.key.clone(), value)
                        })
                        .collect();
                    kept.push(ReceivedSpan {
                        trace_id: hex::encode(&span.trace_id),
                        span_id: hex::encode(&span.span_id),
                        parent_span_id: hex::encode(&span.parent_span_id),
                        name: span.name.clone(),
                        attributes,
                    });
                }
                ([("content-type", "application/x-protobuf")], ExportTraceServiceResponse::default().encode_to_vec())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Collector { endpoint, spans }
}

impl Collector {
    /// The spans received so far once `done` holds of them (waiting up to 30 s).
    async fn wait_for(&self, what: &str, done: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
        for _ in 0..300 {
            let spans = self.spans.lock().unwrap().clone();
            if done(&spans) {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let names: Vec<String> =
            self.spans.lock().unwrap().iter().map(|span| format!("{} {}", span.name, span.trace_id)).collect();
        panic!("the collector never received {what}; it has {names:?}");
    }
}

/// A running `kefu serve` exporting traces to `endpoint`, with its log lines.
struct TracedKefu {
    _child: Child,
    address: String,
    metrics: Option<String>,
    grpc: String,
    log: Arc<Mutex<Vec<String>>>,
}

async fn serve_traced(data_dir: &Path, endpoint: &str, metrics: bool) -> TracedKefu {
    let mut command = kefu();
    command
        .args(["serve", "--data-dir", data_dir.to_str().unwrap(), "--http", "127.0.0.1:0"])
        .env("KEFU_TELEMETRY__OTLP_ENDPOINT", endpoint)
        .env("KEFU_METRICS", if metrics { "127.0.0.1:0" } else { "off" })
        .env("KEFU_GRPC__LISTEN", "127.0.0.1:0")
        .env("KEFU_LLM__ALLOW_PRIVATE_ADDRESSES", "true")
        .env("RUST_LOG", "kefu=debug,warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("kefu starts");
    let log = Arc::new(Mutex::new(Vec::new()));
    let lines_kept = log.clone();
    let mut log_lines = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = log_lines.next_line().await {
            lines_kept.lock().unwrap().push(line);
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut metrics, mut grpc) = (None, None);
    let address = loop {
        let line = lines.next_line().await.unwrap().expect("kefu prints its address");
        if let Some(address) = line.strip_prefix("metrics http=") {
            metrics = Some(address.to_owned());
        }
        if let Some(address) = line.strip_prefix("grpc=") {
            grpc = Some(address.to_owned());
        }
        if let Some(address) = line.strip_prefix("listening http=") {
            break address.to_owned();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    TracedKefu { _child: child, address, metrics, grpc: grpc.expect("gRPC listens"), log }
}

impl TracedKefu {
    /// The `trace_id` kefu logged when it stored message `seq` of `conversation_id`.
    fn logged_trace_id(&self, conversation_id: u64, seq: u64) -> u64 {
        let log = self.log.lock().unwrap();
        let line = log
            .iter()
            .find(|line| {
                line.contains("message persisted")
                    && line.contains(&format!("conversation_id={conversation_id} "))
                    && line.contains(&format!("seq={seq}"))
            })
            .unwrap_or_else(|| panic!("kefu logged no persisted message {conversation_id}/{seq}: {log:?}"));
        let (_, after) = line.rsplit_once("trace_id=").expect("the line names the trace id");
        after.split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap()
    }
}

/// Sends one message as the visitor and waits for its acknowledgement.
async fn send_and_ack(address: &str, site: &str, token: &str, client_id: &str) -> Value {
    let mut socket = visitor_socket(address, site, token).await;
    socket
        .send(Message::Text(
            json!({"type": "send", "client_id": client_id, "text": "where is my parcel?"}).to_string().into(),
        ))
        .await
        .unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("an ack in time");
        let Some(Ok(Message::Text(text))) = frame else { panic!("the socket closed") };
        let frame: Value = serde_json::from_str(&text).unwrap();
        if frame["type"] == "ack" {
            return frame;
        }
    }
}

/// A stand-in language model answering every chat completion plainly; hands on each request's
/// `traceparent` header.
async fn stand_in_model() -> (String, tokio::sync::mpsc::UnboundedReceiver<Option<String>>) {
    let (sender, received) = tokio::sync::mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let traceparent = headers.get("traceparent").map(|value| value.to_str().unwrap().to_owned());
            let _ = sender.send(traceparent);
            async {
                axum::Json(
                    json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "We will look."}}]}),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base_url, received)
}

async fn admin_token(address: &str) -> String {
    let response = http()
        .post(format!("http://{address}/api/v1/agent/login"))
        .json(&json!({"email": "admin@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_message_is_one_trace_with_every_stage_and_its_webhook_rest_and_grpc_callers_continue_traces() {
    let collector = collector().await;
    let mut webhook_receiver = crate::webhooks::receiver(0).await;
    let (model_url, mut model_requests) = stand_in_model().await;
    let dir = tempfile::tempdir().unwrap();
    let site = admin(dir.path(), &["create-site", "--name", "Shop", "--origin", "*"]).await["site_key"].clone();
    admin(dir.path(), &["create-agent", "--email", "admin@example.com", "--password", PASSWORD, "--role", "admin"])
        .await;
    let kefu = serve_traced(dir.path(), &collector.endpoint, true).await;
    let address = kefu.address.clone();
    let token = admin_token(&address).await;
    let bot = http()
        .put(format!("http://{address}/api/v1/sites/{site}/bot"))
        .bearer_auth(&token)
        .json(&json!({"enabled": true, "greeting": "", "llm": {"base_url": model_url, "model": "stand-in-1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bot.status(), 200, "{}", bot.text().await.unwrap());
    let webhook = http()
        .post(format!("http://{address}/api/v1/sites/{site}/webhooks"))
        .bearer_auth(&token)
        .json(&json!({"url": webhook_receiver.url, "events": ["message.created"], "allow_private": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), 201, "{}", webhook.text().await.unwrap());

    let session = visitor_session(&address, &site, None).await;
    let ack = send_and_ack(&address, &site, session["token"].as_str().unwrap(), "traced-1").await;
    let (conversation_id, seq) = (ack["conversation_id"].as_u64().unwrap(), ack["seq"].as_u64().unwrap());
    let trace_id = format!("{:032x}", kefu.logged_trace_id(conversation_id, seq));

    // The webhook about the visitor's message carries the message's trace.
    let traceparent = loop {
        let (headers, body) = webhook_receiver.next().await;
        if body["data"]["message"]["seq"] == seq && body["data"]["message"]["sender"]["kind"] == "visitor" {
            break headers["traceparent"].to_str().unwrap().to_owned();
        }
    };
    let fields: Vec<&str> = traceparent.split('-').collect();
    assert_eq!((fields.len(), fields[0], fields[1], fields[3]), (4, "00", trace_id.as_str(), "01"), "{traceparent}");

    let stages = ["message", "decode", "filter", "route", "persist", "deliver", "bot", "webhook"];
    let spans = collector
        .wait_for("every stage of the message", |spans| {
            stages.iter().all(|stage| spans.iter().any(|span| span.trace_id == trace_id && span.name == *stage))
        })
        .await;
    let in_trace: Vec<&ReceivedSpan> = spans.iter().filter(|span| span.trace_id == trace_id).collect();
    let roots: Vec<&&ReceivedSpan> = in_trace.iter().filter(|span| span.name == "message").collect();
    assert_eq!(roots.len(), 1, "one root: {in_trace:?}");
    let root = roots[0];
    assert_eq!(root.span_id, trace_id[16..], "the root's span id is the trace id's number");
    assert_eq!(root.parent_span_id, "", "the message's span is the root");
    assert_eq!(root.attributes["trace_id"], kefu.logged_trace_id(conversation_id, seq).to_string());
    for stage in &stages[1..] {
        let span = in_trace.iter().find(|span| span.name == *stage).unwrap();
        assert_eq!(span.parent_span_id, root.span_id, "{stage} is a child of the message");
    }
    // The bot's answer continues the trace too, with a webhook of its own; the visitor message's
    // delivery is the receiver's parent.
    assert!(
        in_trace.iter().any(|span| span.name == "webhook" && span.span_id == fields[2]),
        "the receiver's parent is a delivery's span: {traceparent} {in_trace:?}"
    );

    // The bot asked the model within its span of the message's trace.
    let model_traceparent = tokio::time::timeout(Duration::from_secs(10), model_requests.recv())
        .await
        .expect("the bot asks the model")
        .unwrap()
        .expect("the model request carries traceparent");
    let bot_span = in_trace.iter().find(|span| span.name == "bot").unwrap();
    assert_eq!(model_traceparent, format!("00-{trace_id}-{}-01", bot_span.span_id));

    // A REST call with a traceparent runs in the caller's trace; a malformed one changes nothing.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    for header in [format!("00-{caller_trace}-{caller_span}-01"), "00-not-a-trace-01".to_owned()] {
        let listed = http()
            .get(format!("http://{address}/api/v1/conversations"))
            .bearer_auth(&token)
            .header("traceparent", header)
            .send()
            .await
            .unwrap();
        assert_eq!(listed.status(), 200);
    }
    let spans = collector
        .wait_for("the REST call in the caller's trace", |spans| spans.iter().any(|span| span.trace_id == caller_trace))
        .await;
    let call = spans.iter().find(|span| span.trace_id == caller_trace).unwrap();
    assert_eq!((call.name.as_str(), call.parent_span_id.as_str()), ("GET /api/v1/conversations", caller_span));
    assert_eq!(call.attributes["http.response.status_code"], "200");
    collector
        .wait_for("the call with a malformed traceparent in a trace of its own", |spans| {
            spans
                .iter()
                .filter(|span| span.name == "GET /api/v1/conversations")
                .any(|span| span.trace_id != caller_trace && span.parent_span_id.is_empty())
        })
        .await;

    // A gRPC call with traceparent metadata runs in the caller's trace too.
    let grpc_trace = "0af7651916cd43dd8448eb211c80319c";
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", kefu.grpc)).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let mut check = tonic::Request::new(tonic_health::pb::HealthCheckRequest::default());
    check.metadata_mut().insert("traceparent", format!("00-{grpc_trace}-{caller_span}-01").parse().unwrap());
    health.check(check).await.unwrap();
    let spans = collector
        .wait_for("the gRPC call in the caller's trace", |spans| spans.iter().any(|span| span.trace_id == grpc_trace))
        .await;
    let call = spans.iter().find(|span| span.trace_id == grpc_trace).unwrap();
    assert_eq!((call.name.as_str(), call.parent_span_id.as_str()), ("grpc.health.v1.Health/Check", caller_span));

    // What reached the collector is counted, and nothing was dropped.
    let metrics = http()
        .get(format!("http://{}/metrics", kefu.metrics.as_deref().unwrap()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(counted(&metrics, "kefu_trace_spans_exported_total") >= stages.len() as u64, "{metrics}");
    assert_eq!(counted(&metrics, "kefu_trace_spans_dropped_total{reason=\"queue_full\"}"), 0, "{metrics}");
    assert_eq!(counted(&metrics, "kefu_trace_spans_dropped_total{reason=\"export_failed\"}"), 0, "{metrics}");
}

/// The value of a series in the metrics text (0 when absent).
fn counted(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).filter(|rest| rest.starts_with(' ')))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_unreachable_collector_costs_messages_nothing_and_dropped_spans_are_counted() {
    // A port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let site = admin(dir.path(), &["create-site", "--name", "Shop", "--origin", "*"]).await["site_key"].clone();
    let kefu = serve_traced(dir.path(), &endpoint, true).await;
    let session = visitor_session(&kefu.address, &site, None).await;
    let token = session["token"].as_str().unwrap();
    for n in 0..20 {
        let ack = send_and_ack(&kefu.address, &site, token, &format!("lost-{n}")).await;
        assert_eq!(ack["duplicate"], false);
    }
    let metrics_url = format!("http://{}/metrics", kefu.metrics.as_deref().expect("metrics listen"));
    for _ in 0..100 {
        let text = http().get(&metrics_url).send().await.unwrap().text().await.unwrap();
        if counted(&text, "kefu_trace_spans_dropped_total{reason=\"export_failed\"}") > 0 {
            assert_eq!(counted(&text, "kefu_trace_spans_exported_total"), 0, "{text}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the dropped spans were never counted");
}
