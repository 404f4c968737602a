//! The control API's state and operations, as toxiproxy defines them:
//! named proxies (listen path, upstream path, enabled) each with named
//! toxics (type, stream, toxicity, attributes). Every operation returns
//! toxiproxy's JSON shape or its error (message and HTTP status); the HTTP
//! layer ([`super::http`]) only routes.
//!
//! A disabled proxy is stopped (no listener, connections cut); enabling it
//! starts a new [`FaultProxy`] with the same toxics, as toxiproxy does.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::super::registry::{self, Built, FaultArgs, FaultKind};
use super::super::{
    Direction, FaultEvent, FaultGuard, FaultProxy, Framing, OutageGuard, ProxyStats, Toxicity,
};
use super::access::Caller;

/// An API error: toxiproxy's `{"error": message, "status": code}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// What went wrong.
    pub message: String,
}

impl ApiError {
    fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_body(e: impl std::fmt::Display) -> Self {
        Self::new(400, format!("bad request body: {e}"))
    }

    fn missing(field: &str) -> Self {
        Self::new(400, format!("missing required field: {field}"))
    }

    fn proxy_not_found() -> Self {
        Self::new(404, "proxy not found")
    }

    fn toxic_not_found() -> Self {
        Self::new(404, "toxic not found")
    }

    /// The JSON body.
    pub fn to_json(&self) -> Value {
        json!({"error": self.message, "status": self.status})
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.status)
    }
}

impl std::error::Error for ApiError {}

/// Receives each event of every proxy.
pub type SharedSink = Arc<dyn Fn(&FaultEvent) + Send + Sync>;

struct Toxic {
    name: String,
    kind: &'static FaultKind,
    args: FaultArgs,
    stream: Direction,
    toxicity: f64,
    attributes: Map<String, Value>,
    guard: Option<FaultGuard>,
    /// A `refuse` toxic's outage: dropping it (the toxic removed, the
    /// proxies reset) takes the outage back.
    outage: Option<OutageGuard>,
}

impl Toxic {
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind.toxic,
            "stream": stream_name(self.stream),
            "toxicity": self.toxicity,
            "attributes": self.attributes,
        })
    }

    fn install(&mut self, proxy: &FaultProxy) {
        self.guard = None;
        self.outage = None;
        match self.args.build() {
            Built::Fault(fault) => {
                let fault: Box<dyn super::super::Fault> = if self.toxicity < 1.0 {
                    let salt = self.name.bytes().fold(0u64, |h, b| {
                        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
                    });
                    Box::new(Toxicity::boxed(fault, self.toxicity, salt))
                } else {
                    fault
                };
                self.guard = Some(proxy.add_boxed_fault(self.stream, fault));
            }
            Built::Outage(outage) => self.outage = Some(proxy.add_outage(outage)),
        }
    }
}

fn stream_name(direction: Direction) -> &'static str {
    match direction {
        Direction::ToUpstream => "upstream",
        Direction::ToClient => "downstream",
    }
}

struct Entry {
    listen: String,
    upstream: String,
    running: Option<FaultProxy>,
    toxics: Vec<Toxic>,
}

impl Entry {
    fn to_json(&self, name: &str) -> Value {
        json!({
            "name": name,
            "listen": self.listen,
            "upstream": self.upstream,
            "enabled": self.running.is_some(),
            "toxics": self.toxics.iter().map(Toxic::to_json).collect::<Vec<_>>(),
        })
    }
}

/// How every proxy the API makes is configured.
#[derive(Clone)]
pub struct ProxyDefaults {
    /// Seed of every proxy's random choices.
    pub seed: u64,
    /// Framing of every proxy.
    pub framing: Framing,
    /// Where events go (besides each proxy's log).
    pub sink: Option<SharedSink>,
}

impl std::fmt::Debug for ProxyDefaults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyDefaults")
            .field("seed", &self.seed)
            .field("framing", &self.framing)
            .finish_non_exhaustive()
    }
}

/// The proxies the API manages.
pub(crate) struct State {
    defaults: ProxyDefaults,
    proxies: BTreeMap<String, Entry>,
    /// Counters and event counts of proxies already stopped.
    retired: (ProxyStats, usize),
}

#[derive(Deserialize)]
struct ProxyInput {
    #[serde(default)]
    name: String,
    #[serde(default)]
    listen: String,
    #[serde(default)]
    upstream: String,
    enabled: Option<bool>,
}

#[derive(Deserialize)]
struct ProxyUpdate {
    listen: Option<String>,
    upstream: Option<String>,
    enabled: Option<bool>,
}

#[derive(Deserialize)]
struct ToxicInput {
    #[serde(default)]
    name: String,
    #[serde(rename = "type", default)]
    kind: String,
    stream: Option<String>,
    toxicity: Option<f64>,
    #[serde(default)]
    attributes: Map<String, Value>,
}

#[derive(Deserialize)]
struct ToxicUpdate {
    toxicity: Option<f64>,
    #[serde(default)]
    attributes: Map<String, Value>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(ApiError::bad_body)
}

fn parse_stream(stream: Option<&str>) -> Result<Direction, ApiError> {
    match stream.unwrap_or("downstream") {
        "upstream" => Ok(Direction::ToUpstream),
        "downstream" => Ok(Direction::ToClient),
        _ => Err(ApiError::new(
            400,
            "stream was invalid, can be either upstream or downstream",
        )),
    }
}

fn check_toxicity(t: f64) -> Result<f64, ApiError> {
    if (0.0..=1.0).contains(&t) {
        Ok(t)
    } else {
        Err(ApiError::bad_body(format!(
            "toxicity must be 0.0 to 1.0, got {t}"
        )))
    }
}

impl State {
    pub(crate) fn new(defaults: ProxyDefaults) -> Self {
        Self {
            defaults,
            proxies: BTreeMap::new(),
            retired: (ProxyStats::default(), 0),
        }
    }

    async fn start(
        &self,
        name: &str,
        listen: &str,
        upstream: &str,
    ) -> Result<FaultProxy, ApiError> {
        let mut builder = FaultProxy::builder(listen, upstream)
            .name(name)
            .seed(self.defaults.seed)
            .framing(self.defaults.framing);
        if let Some(sink) = self.defaults.sink.clone() {
            builder = builder.on_event(move |e| sink(e));
        }
        builder
            .start()
            .await
            .map_err(|e| ApiError::new(500, format!("listen {listen}: {e}")))
    }

    async fn stop(&mut self, proxy: FaultProxy) {
        proxy.stop().await;
        let stats = proxy.stats();
        let r = &mut self.retired.0;
        r.connections += stats.connections;
        r.upstream_unreachable += stats.upstream_unreachable;
        r.bytes_to_upstream += stats.bytes_to_upstream;
        r.bytes_to_client += stats.bytes_to_client;
        r.events_dropped += stats.events_dropped;
        self.retired.1 += usize::try_from(proxy.events_fired()).unwrap_or(usize::MAX);
    }

    /// `GET /proxies`
    pub(crate) fn index(&self) -> Value {
        let map: Map<String, Value> = self
            .proxies
            .iter()
            .map(|(name, e)| (name.clone(), e.to_json(name)))
            .collect();
        Value::Object(map)
    }

    /// `GET /proxies/{name}`
    pub(crate) fn show(&self, name: &str) -> Result<Value, ApiError> {
        let entry = self
            .proxies
            .get(name)
            .ok_or_else(ApiError::proxy_not_found)?;
        Ok(entry.to_json(name))
    }

    /// `POST /proxies`
    pub(crate) async fn create(
        &mut self,
        body: &[u8],
        caller: Option<&Caller>,
    ) -> Result<Value, ApiError> {
        let input: ProxyInput = parse(body)?;
        check_caller(caller, &input.listen, &input.upstream)?;
        self.create_proxy(
            input.name,
            input.listen,
            input.upstream,
            input.enabled.unwrap_or(true),
        )
        .await
    }

    /// Creates a proxy (as `POST /proxies`).
    pub(crate) async fn create_proxy(
        &mut self,
        name: String,
        listen: String,
        upstream: String,
        enabled: bool,
    ) -> Result<Value, ApiError> {
        validate(&name, &listen, &upstream, None)?;
        if self.proxies.contains_key(&name) {
            return Err(ApiError::new(409, "proxy already exists"));
        }
        let running = if enabled {
            Some(self.start(&name, &listen, &upstream).await?)
        } else {
            None
        };
        let entry = Entry {
            listen,
            upstream,
            running,
            toxics: Vec::new(),
        };
        let json = entry.to_json(&name);
        self.proxies.insert(name, entry);
        Ok(json)
    }

    /// `POST /populate`: creates or replaces each proxy in the list.
    pub(crate) async fn populate(&mut self, body: &[u8], caller: Option<&Caller>) -> (u16, Value) {
        let input: Vec<ProxyInput> = match parse(body) {
            Ok(v) => v,
            Err(e) => return (e.status, e.to_json()),
        };
        for (i, p) in input.iter().enumerate() {
            let checked = validate(&p.name, &p.listen, &p.upstream, Some(i + 1))
                .and_then(|()| check_caller(caller, &p.listen, &p.upstream));
            if let Err(e) = checked {
                return (e.status, e.to_json());
            }
        }
        let mut done = Vec::new();
        for p in input {
            let same = self
                .proxies
                .get(&p.name)
                .is_some_and(|e| e.listen == p.listen && e.upstream == p.upstream);
            if !same {
                if let Some(old) = self.proxies.remove(&p.name) {
                    if let Some(proxy) = old.running {
                        self.stop(proxy).await;
                    }
                }
                let enabled = p.enabled.unwrap_or(true);
                if let Err(e) = self
                    .create_proxy(p.name.clone(), p.listen, p.upstream, enabled)
                    .await
                {
                    let mut body = e.to_json();
                    body["proxies"] = Value::Array(done);
                    return (e.status, body);
                }
            }
            if let Some(entry) = self.proxies.get(&p.name) {
                done.push(entry.to_json(&p.name));
            }
        }
        (201, json!({ "proxies": done }))
    }

    /// `POST|PATCH /proxies/{name}`
    pub(crate) async fn update(
        &mut self,
        name: &str,
        body: &[u8],
        caller: Option<&Caller>,
    ) -> Result<Value, ApiError> {
        let input: ProxyUpdate = parse(body)?;
        check_caller(
            caller,
            input.listen.as_deref().unwrap_or(""),
            input.upstream.as_deref().unwrap_or(""),
        )?;
        let Some(mut entry) = self.proxies.remove(name) else {
            return Err(ApiError::proxy_not_found());
        };
        let listen = input.listen.unwrap_or_else(|| entry.listen.clone());
        let upstream = input.upstream.unwrap_or_else(|| entry.upstream.clone());
        let enabled = input.enabled.unwrap_or(entry.running.is_some());
        let result = async {
            validate(name, &listen, &upstream, None)?;
            let differs = listen != entry.listen || upstream != entry.upstream;
            if differs || !enabled {
                if let Some(proxy) = entry.running.take() {
                    self.stop(proxy).await;
                }
            }
            entry.listen = listen;
            entry.upstream = upstream;
            if enabled && entry.running.is_none() {
                let proxy = self.start(name, &entry.listen, &entry.upstream).await?;
                for toxic in &mut entry.toxics {
                    toxic.install(&proxy);
                }
                entry.running = Some(proxy);
            }
            Ok(entry.to_json(name))
        }
        .await;
        self.proxies.insert(name.to_owned(), entry);
        result
    }

    /// `DELETE /proxies/{name}`
    pub(crate) async fn delete(&mut self, name: &str) -> Result<(), ApiError> {
        let entry = self
            .proxies
            .remove(name)
            .ok_or_else(ApiError::proxy_not_found)?;
        if let Some(proxy) = entry.running {
            self.stop(proxy).await;
        }
        Ok(())
    }

    /// `POST /reset`: every proxy enabled, every toxic removed.
    pub(crate) async fn reset(&mut self) -> Result<(), ApiError> {
        let names: Vec<String> = self.proxies.keys().cloned().collect();
        for name in names {
            let needs_start = self.proxies.get(&name).is_some_and(|e| e.running.is_none());
            let started = if needs_start {
                let e = &self.proxies[&name];
                Some(self.start(&name, &e.listen, &e.upstream).await?)
            } else {
                None
            };
            if let Some(entry) = self.proxies.get_mut(&name) {
                entry.toxics.clear();
                if started.is_some() {
                    entry.running = started;
                }
            }
        }
        Ok(())
    }

    fn entry(&mut self, proxy: &str) -> Result<&mut Entry, ApiError> {
        self.proxies
            .get_mut(proxy)
            .ok_or_else(ApiError::proxy_not_found)
    }

    /// `GET /proxies/{name}/toxics`
    pub(crate) fn toxics(&mut self, proxy: &str) -> Result<Value, ApiError> {
        let entry = self.entry(proxy)?;
        Ok(Value::Array(
            entry.toxics.iter().map(Toxic::to_json).collect(),
        ))
    }

    /// `GET /proxies/{name}/toxics/{toxic}`
    pub(crate) fn toxic(&mut self, proxy: &str, toxic: &str) -> Result<Value, ApiError> {
        let entry = self.entry(proxy)?;
        let toxic = entry
            .toxics
            .iter()
            .find(|t| t.name == toxic)
            .ok_or_else(ApiError::toxic_not_found)?;
        Ok(toxic.to_json())
    }

    /// `POST /proxies/{name}/toxics`
    pub(crate) fn add_toxic(&mut self, proxy: &str, body: &[u8]) -> Result<Value, ApiError> {
        let input: ToxicInput = parse(body)?;
        let framing = self.defaults.framing;
        let entry = self.entry(proxy)?;
        let stream = parse_stream(input.stream.as_deref())?;
        let kind = registry::by_toxic(&input.kind)
            .ok_or_else(|| ApiError::new(400, "invalid toxic type"))?;
        let name = if input.name.is_empty() {
            format!("{}_{}", input.kind, stream_name(stream))
        } else {
            input.name
        };
        if entry.toxics.iter().any(|t| t.name == name) {
            return Err(ApiError::new(409, "toxic already exists"));
        }
        if framing == Framing::None && kind.frame_aware {
            return Err(ApiError::bad_body(format!(
                "`{}` aims at frames, but this proxy reads no frames (--framing none)",
                kind.toxic
            )));
        }
        let args = kind
            .parse_attributes(&input.attributes)
            .map_err(ApiError::bad_body)?;
        let mut toxic = Toxic {
            name,
            kind,
            args,
            stream,
            toxicity: check_toxicity(input.toxicity.unwrap_or(1.0))?,
            attributes: kind.complete_attributes(&input.attributes),
            guard: None,
            outage: None,
        };
        if let Some(proxy) = &entry.running {
            toxic.install(proxy);
        }
        let json = toxic.to_json();
        entry.toxics.push(toxic);
        Ok(json)
    }

    /// `POST|PATCH /proxies/{name}/toxics/{toxic}`: new attributes (merged
    /// over the old ones) and toxicity; the fault starts afresh.
    pub(crate) fn update_toxic(
        &mut self,
        proxy: &str,
        toxic: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let input: ToxicUpdate = parse(body)?;
        let entry = self.entry(proxy)?;
        let running = entry.running.as_ref();
        let toxic = entry
            .toxics
            .iter_mut()
            .find(|t| t.name == toxic)
            .ok_or_else(ApiError::toxic_not_found)?;
        let mut attributes = toxic.attributes.clone();
        attributes.extend(input.attributes);
        toxic.args = toxic
            .kind
            .parse_attributes(&attributes)
            .map_err(ApiError::bad_body)?;
        toxic.attributes = attributes;
        toxic.toxicity = check_toxicity(input.toxicity.unwrap_or(toxic.toxicity))?;
        if let Some(proxy) = running {
            toxic.install(proxy);
        }
        Ok(toxic.to_json())
    }

    /// `DELETE /proxies/{name}/toxics/{toxic}`
    pub(crate) fn remove_toxic(&mut self, proxy: &str, toxic: &str) -> Result<(), ApiError> {
        let entry = self.entry(proxy)?;
        let before = entry.toxics.len();
        entry.toxics.retain(|t| t.name != toxic);
        if entry.toxics.len() == before {
            return Err(ApiError::toxic_not_found());
        }
        Ok(())
    }

    /// Stops every proxy; returns the summed counters and event count of
    /// every proxy this state ever ran.
    pub(crate) async fn stop_all(&mut self) -> (ProxyStats, usize) {
        let entries = std::mem::take(&mut self.proxies);
        for (_, entry) in entries {
            if let Some(proxy) = entry.running {
                self.stop(proxy).await;
            }
        }
        self.retired
    }

    /// Installs a parsed `--fault` on a proxy, as a toxic named `name`.
    pub(crate) fn add_spec(
        &mut self,
        proxy: &str,
        name: String,
        spec: super::super::spec::FaultSpec,
    ) -> Result<(), ApiError> {
        let entry = self.entry(proxy)?;
        let kind = spec.args.kind();
        let mut toxic = Toxic {
            name,
            kind,
            args: spec.args,
            stream: spec.direction,
            toxicity: spec.toxicity,
            attributes: spec.args.attributes(),
            guard: None,
            outage: None,
        };
        if let Some(proxy) = &entry.running {
            toxic.install(proxy);
        }
        entry.toxics.push(toxic);
        Ok(())
    }
}

/// Refuses paths the API's caller could not have used themselves: a
/// `listen` path in a directory they cannot write (or a file there they
/// could not remove), an `upstream` socket they could not connect to. Only
/// where the caller is known (a Unix-socket API); an empty path is not
/// checked (it is missing, or unchanged).
fn check_caller(caller: Option<&Caller>, listen: &str, upstream: &str) -> Result<(), ApiError> {
    let Some(caller) = caller else {
        return Ok(());
    };
    let refused = |e: String| ApiError::new(403, e);
    if !listen.is_empty() {
        caller
            .may_listen(std::path::Path::new(listen))
            .map_err(refused)?;
    }
    if !upstream.is_empty() {
        caller
            .may_connect(std::path::Path::new(upstream))
            .map_err(refused)?;
    }
    Ok(())
}

fn validate(name: &str, listen: &str, upstream: &str, at: Option<usize>) -> Result<(), ApiError> {
    let field = |f: &str| match at {
        Some(i) => format!("{f} at proxy {i}"),
        None => f.to_owned(),
    };
    if name.is_empty() {
        return Err(ApiError::missing(&field("name")));
    }
    if upstream.is_empty() {
        return Err(ApiError::missing(&field("upstream")));
    }
    if listen.is_empty() {
        return Err(ApiError::missing(&field("listen")));
    }
    Ok(())
}
