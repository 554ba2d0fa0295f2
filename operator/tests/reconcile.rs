//! The reconcilers against a mocked API server (`tower-test`, the kube-rs
//! way). The mock is a small in-memory API server: GET/LIST of stored
//! objects, server-side apply (stores and echoes the object), status apply,
//! DELETE, Event creation; every request is logged so tests can check what the
//! reconciler wrote, and what it did not.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::Client;
use serde_json::{json, Value};
use streammachine_crds::v1alpha1::{Format, SourceMount, Stream};
use streammachine_operator::build::Settings;
use streammachine_operator::controller::{self, Context};
use streammachine_operator::metrics::Metrics;
use streammachine_operator::status::{
    MasterReport, MasterStatus, StatusError, StatusFuture, StreamReport,
};
use streammachine_operator::testdata;

const NS: &str = "radio";
const SM: &str = "/apis/streammachine.io/v1alpha1/namespaces/radio";

/// One request as the mock saw it.
#[derive(Debug, Clone)]
struct Call {
    method: Method,
    path: String,
    query: String,
    body: Option<Value>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    /// Status the "cluster" gives an object when it is applied (readiness).
    status_on_apply: BTreeMap<String, Value>,
    log: Vec<Call>,
}

#[derive(Clone, Default)]
struct FakeApi(Arc<Mutex<State>>);

impl FakeApi {
    fn put(&self, path: &str, obj: Value) {
        self.0.lock().unwrap().objects.insert(path.into(), obj);
    }

    fn get(&self, path: &str) -> Option<Value> {
        self.0.lock().unwrap().objects.get(path).cloned()
    }

    fn ready_on_apply(&self, path: &str, status: Value) {
        self.0
            .lock()
            .unwrap()
            .status_on_apply
            .insert(path.into(), status);
    }

    fn take_log(&self) -> Vec<Call> {
        std::mem::take(&mut self.0.lock().unwrap().log)
    }

    fn handle(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut st = self.0.lock().unwrap();
        st.log.push(Call {
            method: method.clone(),
            path: path.into(),
            query: query.into(),
            body: body.clone(),
        });
        let not_found = || {
            (
                StatusCode::NOT_FOUND,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "NotFound", "code": 404, "message": format!("{path} not found")}),
            )
        };
        match method {
            Method::GET => {
                if let Some(o) = st.objects.get(path) {
                    return (StatusCode::OK, o.clone());
                }
                // A list: the objects directly under this collection path.
                let prefix = format!("{path}/");
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix) && !k[prefix.len()..].contains('/'))
                    .map(|(_, v)| v.clone())
                    .collect();
                // `/api/v1/namespaces/NS/RES` or `/apis/G/V/namespaces/NS/RES`.
                let segments = path.split('/').filter(|s| !s.is_empty()).count();
                let collection = if path.starts_with("/apis/") { 6 } else { 5 };
                if segments == collection {
                    return (
                        StatusCode::OK,
                        json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": "1"}, "items": items}),
                    );
                }
                not_found()
            }
            Method::PATCH => {
                let body = body.unwrap_or(Value::Null);
                if let Some(obj_path) = path.strip_suffix("/status") {
                    let Some(obj) = st.objects.get_mut(obj_path) else {
                        return not_found();
                    };
                    obj["status"] = body["status"].clone();
                    return (StatusCode::OK, obj.clone());
                }
                let mut obj = body;
                if let Some(s) = st.status_on_apply.get(path) {
                    obj["status"] = s.clone();
                }
                obj["metadata"]["resourceVersion"] = json!("2");
                st.objects.insert(path.into(), obj.clone());
                (StatusCode::OK, obj)
            }
            Method::DELETE => match st.objects.remove(path) {
                Some(_) => (
                    StatusCode::OK,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ),
                None => not_found(),
            },
            Method::POST => (StatusCode::CREATED, body.unwrap_or(Value::Null)),
            _ => (StatusCode::METHOD_NOT_ALLOWED, json!({})),
        }
    }

    /// A kube Client whose requests this fake answers.
    fn client(&self) -> Client {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = self.clone();
        tokio::spawn(async move {
            while let Some((req, send)) = handle.next_request().await {
                let (parts, body) = req.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let body = (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).unwrap());
                let (code, answer) = fake.handle(
                    parts.method,
                    parts.uri.path(),
                    parts.uri.query().unwrap_or(""),
                    body,
                );
                let resp = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap();
                send.send_response(resp);
            }
        });
        Client::new(service, "default")
    }
}

/// A master that answers with a fixed report (or error).
struct FakeMaster(Mutex<Result<MasterReport, StatusError>>);

impl MasterStatus for FakeMaster {
    fn fetch(&self, base_url: String, token: String) -> StatusFuture {
        assert_eq!(base_url, "http://main-master.radio.svc:8002");
        assert!(!token.is_empty(), "the admin token from the link Secret");
        let r = self.0.lock().unwrap().clone();
        Box::pin(async move { r })
    }
}

fn report() -> MasterReport {
    MasterReport {
        streams: BTreeMap::from([(
            "hits".to_string(),
            StreamReport {
                source_connected: true,
                listeners: 7,
                buffered_seconds: 123.9,
                transcoder_failing: None,
            },
        )]),
        sources: BTreeMap::from([("main".to_string(), 1)]),
        slaves: 2,
        out_of_sync: Vec::new(),
    }
}

fn context(api: &FakeApi, master: Result<MasterReport, StatusError>) -> Arc<Context> {
    Arc::new(Context::new(
        api.client(),
        Settings {
            default_image: "streammachine:test".into(),
        },
        Arc::new(FakeMaster(Mutex::new(master))),
        Arc::new(Metrics::new().unwrap()),
        Duration::from_secs(30),
    ))
}

fn mount_path(name: &str) -> String {
    format!("{SM}/sourcemounts/{name}")
}

fn stream_path(name: &str) -> String {
    format!("{SM}/streams/{name}")
}

/// A cluster with SourceMount `main`, its password Secret and the given Streams.
fn cluster(streams: &[Stream]) -> FakeApi {
    let api = FakeApi::default();
    api.put(
        &mount_path("main"),
        serde_json::to_value(testdata::mount("main")).unwrap(),
    );
    api.put(
        "/api/v1/namespaces/radio/secrets/main-source",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "main-source", "namespace": NS},
               "data": {"password": "aGFja21l"}}),
    );
    for s in streams {
        api.put(
            &stream_path(&s.metadata.name.clone().unwrap()),
            serde_json::to_value(s).unwrap(),
        );
    }
    api.ready_on_apply(
        "/apis/apps/v1/namespaces/radio/deployments/main-master",
        json!({"readyReplicas": 1, "replicas": 1}),
    );
    api.ready_on_apply(
        "/apis/apps/v1/namespaces/radio/deployments/main-slave",
        json!({"readyReplicas": 2, "replicas": 2}),
    );
    api
}

fn mount_of(api: &FakeApi) -> Arc<SourceMount> {
    Arc::new(serde_json::from_value(api.get(&mount_path("main")).unwrap()).unwrap())
}

fn stream_of(api: &FakeApi, name: &str) -> Arc<Stream> {
    Arc::new(serde_json::from_value(api.get(&stream_path(name)).unwrap()).unwrap())
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap()
}

fn writes(log: &[Call]) -> Vec<String> {
    log.iter()
        .filter(|c| c.method != Method::GET)
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

#[tokio::test]
async fn create_applies_every_child_then_reports_status() {
    let api = cluster(&[testdata::stream("hits", "main")]);
    let ctx = context(&api, Ok(report()));

    let action = controller::reconcile_mount(mount_of(&api), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    let log = api.take_log();
    assert_eq!(
        writes(&log),
        [
            "PATCH /api/v1/namespaces/radio/configmaps/main-config",
            "PATCH /api/v1/namespaces/radio/secrets/main-link",
            "PATCH /apis/apps/v1/namespaces/radio/deployments/main-master",
            "PATCH /api/v1/namespaces/radio/services/main-master",
            "PATCH /apis/apps/v1/namespaces/radio/deployments/main-slave",
            "PATCH /api/v1/namespaces/radio/services/main-slave",
            "PATCH /apis/policy/v1/namespaces/radio/poddisruptionbudgets/main-slave",
            "DELETE /apis/apps/v1/namespaces/radio/daemonsets/main-slave",
            "DELETE /api/v1/namespaces/radio/services/main-source",
            // Ready became True: one Normal Event.
            "POST /apis/events.k8s.io/v1/namespaces/radio/events",
            "PATCH /apis/streammachine.io/v1alpha1/namespaces/radio/sourcemounts/main/status",
        ]
    );
    // One field manager, server-side apply, forced.
    for c in log.iter().filter(|c| c.method == Method::PATCH) {
        assert!(
            c.query.contains("fieldManager=streammachine-operator"),
            "{c:?}"
        );
        assert!(c.query.contains("force=true"), "{c:?}");
        let body = c.body.as_ref().unwrap();
        assert!(
            body["apiVersion"].is_string() && body["kind"].is_string(),
            "{c:?}"
        );
    }
    let cm = api
        .get("/api/v1/namespaces/radio/configmaps/main-config")
        .unwrap();
    assert!(cm["data"]["master.yaml"]
        .as_str()
        .unwrap()
        .contains("key: hits"));

    let status = api.get(&mount_path("main")).unwrap()["status"].clone();
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "SourceConnected")["status"], "True");
    assert_eq!(condition(&status, "Degraded")["status"], "False");
    assert_eq!(status["listeners"], 7);
    assert_eq!(status["streams"], 1);
    assert_eq!(status["slaves"], "2/2");
    assert_eq!(status["observedGeneration"], 1);
    assert_eq!(
        status["sourceUrl"],
        "icecast://main-master.radio.svc:8001/main"
    );

    // The Stream's status comes from the master's report.
    let action = controller::reconcile_stream(stream_of(&api, "hits"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
    let status = api.get(&stream_path("hits")).unwrap()["status"].clone();
    assert_eq!(condition(&status, "Ready")["status"], "True");
    assert_eq!(condition(&status, "Ready")["reason"], "Serving");
    assert_eq!(condition(&status, "SourceConnected")["status"], "True");
    assert_eq!(status["listeners"], 7);
    assert_eq!(status["bufferedSeconds"], 123);
    // Every stream serves HLS: its playlist is listed though `hls` is unset.
    assert_eq!(
        status["listenerUrls"],
        json!([
            "http://main-slave.radio.svc:8000/hits",
            "http://main-slave.radio.svc:8000/hits.m3u8"
        ])
    );
    assert_eq!(status["sourceMount"], "main");
    api.take_log();

    // Nothing changed: the link Secret keeps its values, and no status is
    // written again (no write → watch event → reconcile loop).
    let link_before = api
        .get("/api/v1/namespaces/radio/secrets/main-link")
        .unwrap()["data"]
        .clone();
    controller::reconcile_mount(mount_of(&api), ctx.clone())
        .await
        .unwrap();
    controller::reconcile_stream(stream_of(&api, "hits"), ctx)
        .await
        .unwrap();
    let log = api.take_log();
    assert!(
        !writes(&log).iter().any(|w| w.ends_with("/status")),
        "{:?}",
        writes(&log)
    );
    let link_after = api
        .get("/api/v1/namespaces/radio/secrets/main-link")
        .unwrap()["data"]
        .clone();
    assert_eq!(link_before, link_after);
}

#[tokio::test]
async fn a_stream_naming_a_missing_mount_is_not_ready_and_not_retried() {
    let api = cluster(&[testdata::stream("lost", "nope")]);
    let ctx = context(&api, Ok(report()));
    let action = controller::reconcile_stream(stream_of(&api, "lost"), ctx)
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    let log = api.take_log();
    // A Warning Event for the transition, then the status.
    assert_eq!(
        writes(&log),
        [
            "POST /apis/events.k8s.io/v1/namespaces/radio/events",
            "PATCH /apis/streammachine.io/v1alpha1/namespaces/radio/streams/lost/status"
        ]
    );
    let event = log.iter().find(|c| c.path.ends_with("/events")).unwrap();
    let event = event.body.as_ref().unwrap();
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "SourceMountNotFound");
    assert_eq!(event["regarding"]["name"], "lost");
    let status = api.get(&stream_path("lost")).unwrap()["status"].clone();
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "SourceMountNotFound");
    assert!(ready["message"].as_str().unwrap().contains("\"nope\""));
    assert_eq!(ready["observedGeneration"], 1);
    assert!(status.get("listeners").is_none());
}

#[tokio::test]
async fn a_bad_format_is_not_ready_and_left_out_of_the_config() {
    let good = testdata::stream("hits", "main");
    let mut bad = testdata::stream("aac", "main");
    bad.spec.format = Some(Format::Aac); // mp3 source, no bitrate
    let api = cluster(&[good, bad]);
    let ctx = context(&api, Ok(report()));

    let action = controller::reconcile_stream(stream_of(&api, "aac"), ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    let status = api.get(&stream_path("aac")).unwrap()["status"].clone();
    assert_eq!(condition(&status, "Ready")["reason"], "InvalidSpec");
    assert!(condition(&status, "Ready")["message"]
        .as_str()
        .unwrap()
        .starts_with("spec.format: aac differs"));

    controller::reconcile_mount(mount_of(&api), ctx)
        .await
        .unwrap();
    let cm = api
        .get("/api/v1/namespaces/radio/configmaps/main-config")
        .unwrap();
    let master = cm["data"]["master.yaml"].as_str().unwrap();
    assert!(
        master.contains("key: hits") && !master.contains("key: aac"),
        "{master}"
    );
    let status = api.get(&mount_path("main")).unwrap()["status"].clone();
    assert_eq!(condition(&status, "Ready")["status"], "True");
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "InvalidStreams");
    assert!(degraded["message"].as_str().unwrap().contains("aac"));
}

#[tokio::test]
async fn a_missing_password_secret_builds_nothing() {
    let api = cluster(&[]);
    {
        let mut st = api.0.lock().unwrap();
        st.objects
            .remove("/api/v1/namespaces/radio/secrets/main-source");
    }
    let ctx = context(&api, Ok(report()));
    let action = controller::reconcile_mount(mount_of(&api), ctx)
        .await
        .unwrap();
    // Secrets are watched: creating it brings the SourceMount back, no poll.
    assert_eq!(action, Action::await_change());
    let log = api.take_log();
    assert_eq!(
        writes(&log),
        [
            "POST /apis/events.k8s.io/v1/namespaces/radio/events",
            "PATCH /apis/streammachine.io/v1alpha1/namespaces/radio/sourcemounts/main/status"
        ]
    );
    let status = api.get(&mount_path("main")).unwrap()["status"].clone();
    assert_eq!(
        condition(&status, "Ready")["reason"],
        "SourcePasswordNotFound"
    );
}

#[tokio::test]
async fn a_lagging_slave_and_a_failing_transcoder_degrade_with_an_event() {
    let api = cluster(&[testdata::stream("hits", "main")]);
    controller::reconcile_mount(mount_of(&api), context(&api, Ok(report())))
        .await
        .unwrap();
    api.take_log();
    let mut bad = report();
    bad.out_of_sync = vec![("main-slave-abc".into(), 42)];
    if let Some(s) = bad.streams.get_mut("hits") {
        s.transcoder_failing = Some("unsupported input: 6 input channels".into());
    }
    let ctx = context(&api, Ok(bad));
    controller::reconcile_mount(mount_of(&api), ctx.clone())
        .await
        .unwrap();
    let status = api.get(&mount_path("main")).unwrap()["status"].clone();
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "SlavesOutOfSync");
    assert_eq!(
        degraded["message"],
        "slaves out of sync: main-slave-abc (42 chunks behind)"
    );
    let log = api.take_log();
    let event = log
        .iter()
        .find(|c| c.method == Method::POST && c.path.ends_with("/events"))
        .expect("an Event");
    let body = event.body.as_ref().unwrap();
    assert_eq!(body["reason"], "SlaveOutOfSync", "{body}");
    assert_eq!(body["type"], "Warning", "{body}");
    // Still out of sync: no second Event.
    controller::reconcile_mount(mount_of(&api), ctx.clone())
        .await
        .unwrap();
    assert!(!api
        .take_log()
        .iter()
        .any(|c| c.method == Method::POST && c.path.ends_with("/events")));
    controller::reconcile_stream(stream_of(&api, "hits"), ctx)
        .await
        .unwrap();
    let status = api.get(&stream_path("hits")).unwrap()["status"].clone();
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["reason"], "TranscoderFailing");
    assert!(degraded["message"]
        .as_str()
        .unwrap()
        .ends_with("6 input channels"));
}

#[tokio::test]
async fn an_unreachable_master_makes_source_unknown() {
    let api = cluster(&[testdata::stream("hits", "main")]);
    let ctx = context(&api, Err(StatusError("connection refused".into())));
    controller::reconcile_mount(mount_of(&api), ctx.clone())
        .await
        .unwrap();
    let status = api.get(&mount_path("main")).unwrap()["status"].clone();
    let source = condition(&status, "SourceConnected");
    assert_eq!(source["status"], "Unknown");
    assert_eq!(source["reason"], "MasterUnreachable");
    controller::reconcile_stream(stream_of(&api, "hits"), ctx)
        .await
        .unwrap();
    let status = api.get(&stream_path("hits")).unwrap()["status"].clone();
    assert_eq!(condition(&status, "Ready")["status"], "False");
    assert_eq!(condition(&status, "Ready")["reason"], "MasterUnreachable");
}

#[tokio::test]
async fn switching_to_socket_handoff_replaces_the_slave_deployment() {
    let api = cluster(&[]);
    let ctx = context(&api, Ok(report()));
    controller::reconcile_mount(mount_of(&api), ctx.clone())
        .await
        .unwrap();
    let mut m = api.get(&mount_path("main")).unwrap();
    m["spec"]["slaves"]["handoff"] = json!("Socket");
    api.put(&mount_path("main"), m);
    api.take_log();
    controller::reconcile_mount(mount_of(&api), ctx)
        .await
        .unwrap();
    let w = writes(&api.take_log());
    assert!(
        w.contains(&"PATCH /apis/apps/v1/namespaces/radio/daemonsets/main-slave".to_string()),
        "{w:?}"
    );
    assert!(
        w.contains(&"DELETE /apis/apps/v1/namespaces/radio/deployments/main-slave".to_string()),
        "{w:?}"
    );
    assert!(
        w.contains(
            &"DELETE /apis/policy/v1/namespaces/radio/poddisruptionbudgets/main-slave".to_string()
        ),
        "{w:?}"
    );
    assert!(api
        .get("/apis/apps/v1/namespaces/radio/deployments/main-slave")
        .is_none());
}

/// CPU time of this process, in seconds (utime + stime from /proc).
fn image_of(api: &FakeApi, path: &str) -> String {
    api.get(path).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_new_image_rolls_the_master_first_and_the_slaves_once_it_serves_and_they_relinked() {
    let master_path = "/apis/apps/v1/namespaces/radio/deployments/main-master";
    let slave_path = "/apis/apps/v1/namespaces/radio/deployments/main-slave";
    let api = cluster(&[testdata::stream("hits", "main")]);
    controller::reconcile_mount(mount_of(&api), context(&api, Ok(report())))
        .await
        .unwrap();
    assert_eq!(image_of(&api, slave_path), "streammachine:test");

    // The operator's default image changes (helm upgrade).
    let relinked = Arc::new(FakeMaster(Mutex::new(Ok(MasterReport {
        slaves: 0,
        ..report()
    }))));
    let ctx = Arc::new(Context::new(
        api.client(),
        Settings {
            default_image: "streammachine:v2".into(),
        },
        relinked.clone(),
        Arc::new(Metrics::new().unwrap()),
        Duration::from_secs(30),
    ));
    let rolled = json!({"readyReplicas": 1, "replicas": 1, "updatedReplicas": 1});
    api.ready_on_apply(master_path, rolled);
    // The master's template changes; the slaves keep theirs, and the
    // operator looks again soon.
    let action = controller::reconcile_mount(mount_of(&api), ctx.clone())
        .await
        .unwrap();
    assert_eq!(image_of(&api, master_path), "streammachine:v2");
    assert_eq!(image_of(&api, slave_path), "streammachine:test");
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    // The master serves the new image, but no slave has linked to it yet.
    controller::reconcile_mount(mount_of(&api), ctx.clone())
        .await
        .unwrap();
    assert_eq!(image_of(&api, slave_path), "streammachine:test");
    // The old slaves linked again (the master has its buffer back): roll them.
    *relinked.0.lock().unwrap() = Ok(report());
    let action = controller::reconcile_mount(mount_of(&api), ctx.clone())
        .await
        .unwrap();
    assert_eq!(image_of(&api, slave_path), "streammachine:v2");
    assert_eq!(action, Action::requeue(Duration::from_secs(30)));
}

fn cpu_seconds() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

/// The benchmark: reconcile of one SourceMount with two Streams
/// against the mocked API server, CPU time per reconcile. A benchmark, not a
/// test: it asserts nothing about time. Run it in release mode:
/// `cargo test --release -p streammachine-operator --test reconcile -- --ignored --nocapture bench_`
#[tokio::test(flavor = "current_thread")]
#[ignore]
async fn bench_reconcile_one_mount_two_streams() {
    let api = cluster(&[
        testdata::stream("hits", "main"),
        testdata::stream("talk", "main"),
    ]);
    let ctx = context(&api, Ok(report()));
    // Warm up (first reconcile creates everything).
    controller::reconcile_mount(mount_of(&api), ctx.clone())
        .await
        .unwrap();
    let n = 500;
    let rss0 = rss_bytes();
    let (c0, t0) = (cpu_seconds(), std::time::Instant::now());
    for _ in 0..n {
        controller::reconcile_mount(mount_of(&api), ctx.clone())
            .await
            .unwrap();
        for s in ["hits", "talk"] {
            controller::reconcile_stream(stream_of(&api, s), ctx.clone())
                .await
                .unwrap();
        }
        api.take_log();
    }
    let (cpu, wall) = (cpu_seconds() - c0, t0.elapsed().as_secs_f64());
    println!("| reconcile (1 SourceMount + its 2 Streams, mocked API) | {:.3} ms CPU, {:.3} ms wall per round of 3 reconciles ({n} rounds) |", cpu * 1e3 / f64::from(n), wall * 1e3 / f64::from(n));
    println!(
        "| test process RSS after {n} rounds | {:.1} MB (grew {:.1} MB) |",
        rss_bytes() as f64 / 1e6,
        (rss_bytes().saturating_sub(rss0)) as f64 / 1e6
    );
}
