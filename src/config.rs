//! Configuration: one TOML file, parsed once into a validated [`Config`]; command-line overrides
//! are applied before validation. Unknown keys and bad values are errors that name the key and
//! the file. With no file, the defaults run the bundled samples with local storage.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::capture::SourceConfig;
use crate::challenge::ChallengeConfig;
use crate::decide::DecideConfig;
use crate::detect::DetectConfig;
use crate::device::DeviceConfig;
use crate::publish::MqttConfig;
use crate::seal::SealConfig;

/// Errors loading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: key `{key}`: {message}")]
    Parse {
        file: String,
        key: String,
        message: String,
    },
    #[error("{file}: key `{key}`: {reason}")]
    Invalid {
        file: String,
        key: String,
        reason: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub const ALL: [LogFormat; 2] = [LogFormat::Text, LogFormat::Json];

    /// The name in the config (`[log] format`) and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `veriframe=debug`. `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// `[pipeline]`
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Frames buffered between capture and analysis; when full the oldest is dropped.
    pub queue_capacity: usize,
    /// Analysed frames buffered before the seal stage; when full the frame is not sealed
    /// (counted as `seal_dropped`), so a slow disk never stalls detection.
    pub seal_queue_capacity: usize,
    /// How often stats are logged and published.
    #[serde(with = "humantime_serde")]
    pub stats_interval: Duration,
    /// How long shutdown waits for the stages to drain.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 4,
            seal_queue_capacity: 32,
            stats_interval: Duration::from_secs(10),
            shutdown_timeout: Duration::from_secs(4),
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Device identifier, used in topics and manifests. Default: `veriframe-<hostname>`.
    pub device_id: String,
    /// Where captures, keys and the outbox live.
    pub data_dir: PathBuf,
    pub log: LogConfig,
    pub pipeline: PipelineConfig,
    pub source: SourceConfig,
    pub detect: DetectConfig,
    pub decide: DecideConfig,
    pub seal: SealConfig,
    pub mqtt: MqttConfig,
    pub device: DeviceConfig,
    /// `[challenge]`: liveness by light (docs/challenge.md).
    pub challenge: ChallengeConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            device_id: default_device_id(),
            data_dir: PathBuf::from("veriframe-data"),
            log: LogConfig::default(),
            pipeline: PipelineConfig::default(),
            source: SourceConfig::default(),
            detect: DetectConfig::default(),
            decide: DecideConfig::default(),
            seal: SealConfig::default(),
            mqtt: MqttConfig::default(),
            device: DeviceConfig::default(),
            challenge: ChallengeConfig::default(),
        }
    }
}

fn default_device_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "device".into());
    sanitize_id(&format!("veriframe-{host}"))
}

/// Keep `[A-Za-z0-9_-]`, replace the rest with `-` (device ids appear in MQTT topics).
pub fn sanitize_id(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// Command-line overrides for `run`.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub source: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub key: Option<PathBuf>,
    pub broker: Option<String>,
}

/// Name used for the "file" in errors when there is none.
pub const NO_FILE: &str = "<built-in defaults>";

impl Config {
    /// Parse TOML text. `file` names the source in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let de = toml::Deserializer::new(text);
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            ConfigError::Parse {
                file: file.into(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message: inner.message().trim().to_string(),
            }
        })?;
        Ok(cfg)
    }

    /// Load from a file (or defaults when `None`), apply overrides, validate.
    pub fn load(path: Option<&Path>, ov: &Overrides) -> Result<Self, ConfigError> {
        let (mut cfg, file) = match path {
            Some(p) => {
                let file = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    file: file.clone(),
                    source,
                })?;
                (Self::parse(&text, &file)?, file)
            }
            None => (Config::default(), NO_FILE.to_string()),
        };
        cfg.apply(ov);
        cfg.validate(&file)?;
        Ok(cfg)
    }

    pub fn apply(&mut self, ov: &Overrides) {
        if let Some(s) = &ov.source {
            self.source.uri = s.clone();
        }
        if let Some(d) = &ov.data_dir {
            self.data_dir = d.clone();
        }
        if let Some(f) = ov.log_format {
            self.log.format = f;
        }
        if let Some(k) = &ov.key {
            self.seal.key = Some(k.clone());
        }
        if let Some(b) = &ov.broker {
            self.mqtt.broker = Some(b.clone());
        }
    }

    /// Check every value; the error names the offending key.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let invalid = |(key, reason): (&str, String)| ConfigError::Invalid {
            file: file.into(),
            key: key.into(),
            reason,
        };
        if self.device_id.is_empty()
            || self.device_id.len() > 64
            || sanitize_id(&self.device_id) != self.device_id
        {
            return Err(invalid((
                "device_id",
                "must be 1-64 characters of A-Z a-z 0-9 _ -".into(),
            )));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid(("data_dir", "must not be empty".into())));
        }
        if self.pipeline.queue_capacity == 0 || self.pipeline.queue_capacity > 1024 {
            return Err(invalid((
                "pipeline.queue_capacity",
                "must be in 1..=1024".into(),
            )));
        }
        if self.pipeline.seal_queue_capacity == 0 || self.pipeline.seal_queue_capacity > 4096 {
            return Err(invalid((
                "pipeline.seal_queue_capacity",
                "must be in 1..=4096".into(),
            )));
        }
        if self.pipeline.stats_interval < Duration::from_millis(100) {
            return Err(invalid((
                "pipeline.stats_interval",
                "must be at least 100ms".into(),
            )));
        }
        if self.pipeline.shutdown_timeout.is_zero() {
            return Err(invalid(("pipeline.shutdown_timeout", "must be > 0".into())));
        }
        self.source.validate().map_err(invalid)?;
        self.detect.validate().map_err(invalid)?;
        self.decide.validate().map_err(invalid)?;
        self.seal.validate().map_err(invalid)?;
        self.mqtt.validate().map_err(invalid)?;
        self.device.validate().map_err(invalid)?;
        self.challenge.validate(&self.source.uri).map_err(invalid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        Config::default().validate(NO_FILE).unwrap();
        Config::parse("", "x.toml")
            .unwrap()
            .validate("x.toml")
            .unwrap();
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[source]\nfsp = 3\n", "cam.toml").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("cam.toml"), "{msg}");
        assert!(msg.contains("fsp"), "{msg}");
    }

    #[test]
    fn bad_type_is_named() {
        let e = Config::parse("[source]\nfps = \"fast\"\n", "cam.toml").unwrap_err();
        match e {
            ConfigError::Parse { key, file, .. } => {
                assert_eq!(key, "source.fps");
                assert_eq!(file, "cam.toml");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_value_is_named() {
        let cfg = Config::parse("[source]\nfps = -1.0\n", "cam.toml").unwrap();
        let e = cfg.validate("cam.toml").unwrap_err();
        assert!(
            matches!(e, ConfigError::Invalid { ref key, .. } if key == "source.fps"),
            "{e}"
        );
        let cfg = Config::parse("[pipeline]\nstats_interval = \"1ms\"\n", "a.toml").unwrap();
        let e = cfg.validate("a.toml").unwrap_err().to_string();
        assert!(e.contains("pipeline.stats_interval"), "{e}");
        let e = Config::parse("[pipeline]\nstats_interval = \"soon\"\n", "a.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pipeline.stats_interval"), "{e}");
    }

    #[test]
    fn overrides_apply() {
        let ov = Overrides {
            source: Some("synthetic".into()),
            data_dir: Some("/tmp/x".into()),
            ..Default::default()
        };
        let cfg = Config::load(None, &ov).unwrap();
        assert_eq!(cfg.source.uri, "synthetic");
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../examples/veriframe.toml");
        let cfg = Config::parse(text, "examples/veriframe.toml").unwrap();
        cfg.validate("examples/veriframe.toml").unwrap();
    }
}
