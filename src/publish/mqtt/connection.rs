//! The broker connection and its session: broker URLs, TLS and rumqttc options, error
//! descriptions, reconnect backoff, and the connection task with its packet-id bookkeeping
//! (`Link`: which PUBACK acknowledges which outbox entry).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{
    ConnectReturnCode, ConnectionError, Event as MqEvent, EventLoop, LastWill, MqttOptions,
    Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;

use crate::publish::PublishError;

use super::{Shared, TaskMsg};

/// Install the process-wide rustls crypto provider (ring). Idempotent.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A parsed broker URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// Parse `mqtt://[user[:pass]@]host[:port]` or `mqtts://…` (default ports 1883 / 8883).
pub fn parse_broker(url: &str) -> Result<BrokerUrl, PublishError> {
    let bad = |why: &str| PublishError::BadBroker(format!("{url:?}: {why}"));
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else {
        return Err(bad("expected mqtt://HOST:PORT or mqtts://HOST:PORT"));
    };
    let rest = rest.trim_end_matches('/');
    let (userinfo, hostport) = match rest.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, rest),
    };
    let (username, password) = match userinfo {
        Some(u) => match u.split_once(':') {
            Some((n, p)) => (Some(n.to_string()), Some(p.to_string())),
            None => (Some(u.to_string()), None),
        },
        None => (None, None),
    };
    let default_port = if tls { 8883 } else { 1883 };
    let (host, port) = if let Some(h) = hostport.strip_prefix('[') {
        // [v6]:port
        let (h, p) = h.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        let port = match p.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad("bad port"))?,
            None => default_port,
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad("bad port"))?),
            None => (hostport.to_string(), default_port),
        }
    };
    if host.is_empty() || host.contains('/') {
        return Err(bad("missing or invalid host"));
    }
    Ok(BrokerUrl {
        tls,
        host,
        port,
        username,
        password,
    })
}

/// Connection settings shared by the sink and `veriframe watch`.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub broker: BrokerUrl,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub keep_alive: Duration,
}

fn read_file(p: &std::path::Path) -> Result<Vec<u8>, PublishError> {
    std::fs::read(p).map_err(|e| PublishError::Tls(format!("{}: {e}", p.display())))
}

/// rustls client configuration: CA file or system roots, optional client certificate.
pub fn tls_config(o: &ConnectOptions) -> Result<rustls::ClientConfig, PublishError> {
    install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    match &o.ca_file {
        Some(ca) => {
            let pem = read_file(ca)?;
            let mut n = 0;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert =
                    cert.map_err(|e| PublishError::Tls(format!("{}: bad PEM: {e}", ca.display())))?;
                roots.add(cert).map_err(|e| {
                    PublishError::Tls(format!("{}: unusable CA certificate: {e}", ca.display()))
                })?;
                n += 1;
            }
            if n == 0 {
                return Err(PublishError::Tls(format!(
                    "{}: no CERTIFICATE in file",
                    ca.display()
                )));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "loading system root certificates");
            }
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(PublishError::Tls(
                    "no system root certificates found; set mqtt.ca_file".into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PublishError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    let cfg = match (&o.client_cert, &o.client_key) {
        (Some(c), Some(k)) => {
            let cpem = read_file(c)?;
            let certs: Vec<_> = rustls_pemfile::certs(&mut cpem.as_slice())
                .collect::<Result<_, _>>()
                .map_err(|e| PublishError::Tls(format!("{}: bad PEM: {e}", c.display())))?;
            if certs.is_empty() {
                return Err(PublishError::Tls(format!(
                    "{}: no CERTIFICATE in file",
                    c.display()
                )));
            }
            let kpem = read_file(k)?;
            let key = rustls_pemfile::private_key(&mut kpem.as_slice())
                .map_err(|e| PublishError::Tls(format!("{}: bad PEM: {e}", k.display())))?
                .ok_or_else(|| {
                    PublishError::Tls(format!("{}: no private key in file", k.display()))
                })?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| PublishError::Tls(format!("client certificate: {e}")))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(PublishError::Tls(
                "client_cert and client_key must be set together".into(),
            ))
        }
    };
    Ok(cfg)
}

/// rumqttc options for `o` (clean session; the will, when given, is retained QoS 1).
pub fn mqtt_options(
    o: &ConnectOptions,
    will: Option<(String, &'static str)>,
) -> Result<MqttOptions, PublishError> {
    let mut m = MqttOptions::new(o.client_id.clone(), o.broker.host.clone(), o.broker.port);
    m.set_keep_alive(o.keep_alive.max(Duration::from_secs(5)));
    m.set_clean_session(true);
    m.set_max_packet_size(256 * 1024, 256 * 1024);
    let user = o.username.clone().or_else(|| o.broker.username.clone());
    let pass = o.password.clone().or_else(|| o.broker.password.clone());
    if let Some(u) = user {
        m.set_credentials(u, pass.unwrap_or_default());
    }
    if let Some((topic, payload)) = will {
        m.set_last_will(LastWill::new(topic, payload, QoS::AtLeastOnce, true));
    }
    if o.broker.tls {
        let cfg = tls_config(o)?;
        m.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(cfg),
        )));
    }
    Ok(m)
}

/// A human-readable account of a connection error, naming the likely fix.
pub fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
            "broker refused the connection: bad user name or password (check mqtt.username / mqtt.password)".into()
        }
        ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
            "broker refused the connection: not authorized (bad user name or password, or not allowed by the broker; check mqtt.username / mqtt.password / client certificate)".into()
        }
        ConnectionError::ConnectionRefused(c) => format!("broker refused the connection: {c:?}"),
        ConnectionError::Tls(t) => format!(
            "TLS with the broker failed: {t} (check mqtt.ca_file, the broker's certificate name, client_cert/client_key)"
        ),
        ConnectionError::Io(io) => format!("cannot reach the broker: {io}"),
        other => format!("connection to the broker failed: {other}"),
    }
}

/// Whether an error is about credentials or certificates (retrying will not fix it).
pub fn is_config_error(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized
        ) | ConnectionError::Tls(_)
    )
}

/// Capped exponential backoff with jitter: `min(max, initial·2^attempt)` scaled into
/// `[50%, 100%]` by `jitter01` ∈ [0, 1).
pub fn backoff(attempt: u32, initial: Duration, max: Duration, jitter01: f64) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    exp.mul_f64(0.5 + 0.5 * jitter01.clamp(0.0, 1.0))
}

pub(super) enum Net {
    Connected,
    Acked(Tag),
    Disconnected,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tag {
    Other,
    Alert(u64),
    Stopped,
}

/// Packet-id bookkeeping shared by the publisher and the connection task.
#[derive(Debug, Default)]
pub(super) struct Link {
    pub(super) connected: bool,
    pub(super) fifo: VecDeque<Tag>,
    pub(super) pkids: HashMap<u16, Tag>,
}

pub(super) async fn connection_loop(
    mut el: EventLoop,
    link: Arc<Mutex<Link>>,
    tx: mpsc::Sender<TaskMsg>,
    shared: Arc<Shared>,
    initial: Duration,
    max: Duration,
) {
    let mut failures = 0u32;
    loop {
        match el.poll().await {
            Ok(ev) => {
                let disconnect = matches!(ev, MqEvent::Outgoing(Outgoing::Disconnect));
                let msg = handle_event(&mut lock(&link), ev);
                if let Some(Net::Connected) = msg {
                    failures = 0;
                    shared.connected.store(true, Ordering::SeqCst);
                    shared.connects.fetch_add(1, Ordering::SeqCst);
                    tracing::info!("MQTT connected");
                }
                if let Some(m) = msg {
                    if tx.send(TaskMsg::Net(m)).await.is_err() {
                        return;
                    }
                }
                if disconnect {
                    let mut l = lock(&link);
                    l.connected = false;
                    shared.connected.store(false, Ordering::SeqCst);
                    return;
                }
            }
            Err(e) => {
                let acks = {
                    let mut l = lock(&link);
                    let evs: Vec<MqEvent> = el.state.events.drain(..).collect();
                    let acks: Vec<Net> = evs
                        .into_iter()
                        .filter_map(|ev| handle_event(&mut l, ev))
                        .filter(|m| matches!(m, Net::Acked(_)))
                        .collect();
                    l.connected = false;
                    el.clean();
                    el.pending.clear();
                    l.fifo.clear();
                    l.pkids.clear();
                    acks
                };
                shared.connected.store(false, Ordering::SeqCst);
                for a in acks {
                    if tx.send(TaskMsg::Net(a)).await.is_err() {
                        return;
                    }
                }
                if matches!(e, ConnectionError::RequestsDone) {
                    return;
                }
                let why = describe(&e);
                let changed = {
                    let mut le = shared.last_error.lock().unwrap_or_else(|e| e.into_inner());
                    let changed = le.as_deref() != Some(why.as_str());
                    *le = Some(why.clone());
                    changed
                };
                if is_config_error(&e) || changed {
                    tracing::error!("MQTT: {why}");
                } else {
                    tracing::debug!("MQTT: {why}");
                }
                if tx.send(TaskMsg::Net(Net::Disconnected)).await.is_err() {
                    return;
                }
                let d = backoff(failures, initial, max, rand::random::<f64>());
                failures = failures.saturating_add(1);
                tokio::time::sleep(d).await;
            }
        }
    }
}

fn lock(l: &Mutex<Link>) -> std::sync::MutexGuard<'_, Link> {
    // A poisoned lock only means another task panicked mid-update; the data is still usable.
    l.lock().unwrap_or_else(|e| e.into_inner())
}

fn handle_event(l: &mut Link, ev: MqEvent) -> Option<Net> {
    match ev {
        MqEvent::Incoming(Packet::ConnAck(_)) => {
            l.connected = true;
            l.fifo.clear();
            l.pkids.clear();
            Some(Net::Connected)
        }
        MqEvent::Outgoing(Outgoing::Publish(pkid)) => {
            let tag = l.fifo.pop_front().unwrap_or(Tag::Other);
            if pkid != 0 && tag != Tag::Other {
                l.pkids.insert(pkid, tag);
            }
            None
        }
        MqEvent::Incoming(Packet::PubAck(a)) => l.pkids.remove(&a.pkid).map(Net::Acked),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let b = parse_broker("mqtt://localhost:1884").unwrap();
        assert_eq!((b.tls, b.host.as_str(), b.port), (false, "localhost", 1884));
        let b = parse_broker("mqtts://u:p@broker.example").unwrap();
        assert_eq!((b.tls, b.port), (true, 8883));
        assert_eq!(b.username.as_deref(), Some("u"));
        assert_eq!(b.password.as_deref(), Some("p"));
        assert_eq!(parse_broker("mqtt://[::1]:99").unwrap().host, "::1");
        assert!(parse_broker("http://x").is_err());
        assert!(parse_broker("mqtt://:1").is_err());
        assert!(parse_broker("mqtt://h:notaport").is_err());
    }

    #[test]
    fn backoff_is_capped_exponential_with_jitter() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(5));
        assert_eq!(backoff(0, i, m, 0.999_999).as_millis(), 99);
        assert_eq!(backoff(0, i, m, 0.0).as_millis(), 50);
        assert_eq!(backoff(3, i, m, 0.0).as_millis(), 400);
        assert_eq!(backoff(30, i, m, 0.0), Duration::from_millis(2500));
        assert!(backoff(30, i, m, 0.99) <= m);
    }

    #[test]
    fn pkid_bookkeeping_maps_pubacks_to_alerts() {
        let mut l = Link::default();
        assert!(matches!(
            handle_event(
                &mut l,
                MqEvent::Incoming(Packet::ConnAck(rumqttc::ConnAck::new(
                    ConnectReturnCode::Success,
                    false
                )))
            ),
            Some(Net::Connected)
        ));
        l.fifo.extend([Tag::Other, Tag::Alert(7), Tag::Alert(8)]);
        handle_event(&mut l, MqEvent::Outgoing(Outgoing::Publish(0))); // QoS 0 status
        handle_event(&mut l, MqEvent::Outgoing(Outgoing::Publish(1)));
        handle_event(&mut l, MqEvent::Outgoing(Outgoing::Publish(2)));
        let ack = |p| MqEvent::Incoming(Packet::PubAck(rumqttc::PubAck::new(p)));
        assert!(matches!(
            handle_event(&mut l, ack(2)),
            Some(Net::Acked(Tag::Alert(8)))
        ));
        assert!(matches!(
            handle_event(&mut l, ack(1)),
            Some(Net::Acked(Tag::Alert(7)))
        ));
        assert!(handle_event(&mut l, ack(1)).is_none());
    }
}
