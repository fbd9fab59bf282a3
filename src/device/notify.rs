//! `sd_notify(3)` over the `NOTIFY_SOCKET` unix datagram socket, without libsystemd.
//!
//! The daemon sends `READY=1` once its stages are built (camera open, models loaded),
//! `WATCHDOG=1` from the analysis loop (only when frames are actually analysed, so a stalled
//! capture or detector lets systemd's `WatchdogSec=` fire and restart the service) and
//! `STOPPING=1` when it starts draining. Without `NOTIFY_SOCKET` (not started by systemd, tests)
//! every call is a no-op.
//!
//! The decisions (watchdog interval from the environment, whether a ping is due) are pure
//! functions; only [`Notifier::send`] does I/O.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::Actuator;
use crate::capture::CaptureEvent;
use crate::decide::Verdict;

/// Where notifications go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyTarget {
    /// A socket file path.
    Path(PathBuf),
    /// A Linux abstract socket (`NOTIFY_SOCKET=@name`); the name without the `@`.
    Abstract(Vec<u8>),
}

/// Parse a `NOTIFY_SOCKET` value. Empty or relative values are ignored, as libsystemd does.
pub fn parse_notify_socket(value: &str) -> Option<NotifyTarget> {
    if let Some(name) = value.strip_prefix('@') {
        if name.is_empty() {
            return None;
        }
        return Some(NotifyTarget::Abstract(name.as_bytes().to_vec()));
    }
    if value.starts_with('/') {
        return Some(NotifyTarget::Path(PathBuf::from(value)));
    }
    None
}

/// Sends `sd_notify` messages; a no-op when there is no target.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    target: Option<NotifyTarget>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` (unset: a no-op notifier).
    pub fn from_env() -> Self {
        Self {
            target: std::env::var("NOTIFY_SOCKET")
                .ok()
                .and_then(|v| parse_notify_socket(&v)),
        }
    }

    /// To an explicit target (tests, or a caller that parsed the environment itself).
    pub fn to_target(target: Option<NotifyTarget>) -> Self {
        Self { target }
    }

    /// Whether messages go anywhere.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Send one message (`KEY=VALUE` lines). Returns `Ok(false)` without a target.
    pub fn send(&self, msg: &str) -> io::Result<bool> {
        let Some(target) = &self.target else {
            return Ok(false);
        };
        let sock = UnixDatagram::unbound()?;
        // Never let a notification stall the frame path: a full socket queue (nobody reading, or
        // a tiny net.unix.max_dgram_qlen) is an error that the caller logs, not a wait.
        sock.set_nonblocking(true)?;
        match target {
            NotifyTarget::Path(p) => {
                sock.send_to(msg.as_bytes(), p)?;
            }
            NotifyTarget::Abstract(name) => send_abstract(&sock, name, msg.as_bytes())?,
        }
        Ok(true)
    }

    /// Send, logging (not returning) a failure: notifications must never stop the pipeline.
    fn send_logged(&self, msg: &str) {
        match self.send(msg) {
            Ok(true) => tracing::debug!(msg, "sd_notify"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, msg, "sd_notify failed"),
        }
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) {
        self.send_logged(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) {
        self.send_logged(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`.
    pub fn watchdog(&self) {
        self.send_logged("WATCHDOG=1");
    }

    /// `STATUS=...` only.
    pub fn status(&self, status: &str) {
        self.send_logged(&format!("STATUS={}", one_line(status)));
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(sock: &UnixDatagram, name: &[u8], msg: &[u8]) -> io::Result<()> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(msg, &addr).map(|_| ())
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_abstract(_sock: &UnixDatagram, _name: &[u8], _msg: &[u8]) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract unix sockets need Linux",
    ))
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC` (as `sd_watchdog_enabled(3)`
/// recommends), or `None` when the watchdog is off or meant for another process
/// (`WATCHDOG_PID` set to a different pid).
pub fn watchdog_interval(
    watchdog_usec: Option<&str>,
    watchdog_pid: Option<&str>,
    my_pid: u32,
) -> Option<Duration> {
    let usec: u64 = watchdog_usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = watchdog_pid {
        if pid.trim().parse::<u32>().ok()? != my_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Whether a watchdog ping is due at `now`, given the time of the last one.
pub fn ping_due(last: Option<Duration>, now: Duration, interval: Duration) -> bool {
    match last {
        None => true,
        Some(l) => now.saturating_sub(l) >= interval,
    }
}

/// Rate-limited `WATCHDOG=1` for the analysis loop: call [`Watchdog::frame_analysed`] after
/// every analysed frame; it pings at most once per interval (`WATCHDOG_USEC / 2`).
#[derive(Debug)]
pub struct Watchdog {
    notifier: Notifier,
    interval: Option<Duration>,
    epoch: Instant,
    last: Option<Duration>,
    pings: u64,
}

impl Watchdog {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`; disabled when any is missing.
    pub fn from_env() -> Self {
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let pid = std::env::var("WATCHDOG_PID").ok();
        Self::new(
            Notifier::from_env(),
            watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id()),
        )
    }

    /// With an explicit notifier and ping interval (`None`: disabled).
    pub fn new(notifier: Notifier, interval: Option<Duration>) -> Self {
        let interval = interval.filter(|_| notifier.enabled());
        Self {
            notifier,
            interval,
            epoch: Instant::now(),
            last: None,
            pings: 0,
        }
    }

    /// The ping interval, when the watchdog is on.
    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    /// The notifier it pings through (for `READY=1` and `STATUS=` from the same loop).
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    /// Pings sent so far.
    pub fn pings(&self) -> u64 {
        self.pings
    }

    /// A frame went through the analyser: ping if due. Returns whether it pinged.
    pub fn frame_analysed(&mut self) -> bool {
        let Some(interval) = self.interval else {
            return false;
        };
        let now = self.epoch.elapsed();
        if !ping_due(self.last, now, interval) {
            return false;
        }
        self.last = Some(now);
        self.pings += 1;
        self.notifier.watchdog();
        true
    }
}

/// The systemd side of the device as an [`Actuator`]: `STATUS=` when the stages run,
/// `READY=1` after the first analysed frame, `WATCHDOG=1` (rate-limited) only from analysed
/// frames, `STATUS=` when the camera is lost, `STOPPING=1` on shutdown.
#[derive(Debug)]
pub struct SystemdNotifier {
    watchdog: Watchdog,
}

impl SystemdNotifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` (a no-op without them).
    pub fn from_env() -> Self {
        Self::new(Watchdog::from_env())
    }

    pub fn new(watchdog: Watchdog) -> Self {
        Self { watchdog }
    }

    pub fn watchdog(&self) -> &Watchdog {
        &self.watchdog
    }
}

impl Actuator for SystemdNotifier {
    fn on_verdict(&mut self, _verdict: Verdict) {
        self.watchdog.frame_analysed();
    }

    fn on_started(&mut self) {
        // READY=1 waits for the first analysed frame, so a camera missing at start keeps the
        // unit in "activating" until TimeoutStartSec restarts it.
        self.watchdog
            .notifier()
            .status("models loaded; waiting for the first frame");
    }

    fn on_ready(&mut self) {
        self.watchdog.notifier().ready("analysing frames");
    }

    fn on_camera_event(&mut self, event: &CaptureEvent) {
        // `systemctl status` shows a lost camera.
        if let CaptureEvent::CameraLost { path, reason } = event {
            self.watchdog
                .notifier()
                .status(&format!("camera {path} lost: {reason}"));
        }
    }

    fn on_stopping(&mut self) {
        self.watchdog.notifier().stopping("draining");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_socket_values() {
        assert_eq!(
            parse_notify_socket("/run/systemd/notify"),
            Some(NotifyTarget::Path("/run/systemd/notify".into()))
        );
        assert_eq!(
            parse_notify_socket("@abc"),
            Some(NotifyTarget::Abstract(b"abc".to_vec()))
        );
        assert_eq!(parse_notify_socket("@"), None);
        assert_eq!(parse_notify_socket(""), None);
        assert_eq!(parse_notify_socket("relative/sock"), None);
    }

    #[test]
    fn watchdog_interval_is_half_and_respects_pid() {
        assert_eq!(
            watchdog_interval(Some("30000000"), None, 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn ping_due_after_interval_only() {
        let i = Duration::from_secs(10);
        assert!(ping_due(None, Duration::ZERO, i));
        assert!(!ping_due(
            Some(Duration::from_secs(5)),
            Duration::from_secs(14),
            i
        ));
        assert!(ping_due(
            Some(Duration::from_secs(5)),
            Duration::from_secs(15),
            i
        ));
    }

    fn bound_socket() -> (tempfile::TempDir, UnixDatagram, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        (dir, sock, path)
    }

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a datagram");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_ready_stopping_over_a_path_socket() {
        let (_dir, sock, path) = bound_socket();
        let n = Notifier::to_target(Some(NotifyTarget::Path(path)));
        n.ready("analysing\nframes");
        assert_eq!(recv(&sock), "READY=1\nSTATUS=analysing frames");
        n.stopping("draining");
        assert_eq!(recv(&sock), "STOPPING=1\nSTATUS=draining");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_over_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("veriframe-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let sock = UnixDatagram::bind_addr(&addr).expect("bind abstract");
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::to_target(parse_notify_socket(&format!("@{name}")));
        assert!(n.send("WATCHDOG=1").expect("send"));
        assert_eq!(recv(&sock), "WATCHDOG=1");
    }

    #[test]
    fn no_target_is_a_no_op() {
        let n = Notifier::to_target(None);
        assert!(!n.enabled());
        assert!(!n.send("READY=1").expect("no-op"));
        let mut w = Watchdog::new(n, Some(Duration::ZERO));
        assert!(!w.frame_analysed());
        assert_eq!(w.interval(), None);
    }

    #[test]
    fn watchdog_pings_on_frames_rate_limited() {
        let (_dir, sock, path) = bound_socket();
        let n = Notifier::to_target(Some(NotifyTarget::Path(path)));
        // A long interval: the first frame pings, the next ones within the interval do not.
        let mut w = Watchdog::new(n.clone(), Some(Duration::from_secs(3600)));
        assert!(w.frame_analysed());
        assert!(!w.frame_analysed());
        assert!(!w.frame_analysed());
        assert_eq!(w.pings(), 1);
        assert_eq!(recv(&sock), "WATCHDOG=1");
        // A zero interval pings on every frame; nothing is sent without frames.
        let mut w = Watchdog::new(n, Some(Duration::ZERO));
        assert!(w.frame_analysed());
        assert!(w.frame_analysed());
        assert_eq!(recv(&sock), "WATCHDOG=1");
        assert_eq!(recv(&sock), "WATCHDOG=1");
        sock.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert!(sock.recv(&mut buf).is_err(), "no ping without a frame");
    }
}
