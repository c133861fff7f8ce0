//! The settings of a tern process, with their defaults. Loading them (file, environment,
//! flags) is the binary's job; this module owns their shape and validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// All settings. Unknown keys in `tern.toml` are errors, so typos are caught.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Data folder: the SQLite database, logs, keys.
    pub home: PathBuf,
    /// Folder of `.star` DAG files; default: `dags` in `home`.
    pub dags_folder: Option<PathBuf>,
    /// `sqlite:///path/tern.db` or `postgres://…`; default: `tern.db` in `home`.
    pub database_url: Option<String>,
    pub server: ServerConfig,
    pub scheduler: SchedulerConfig,
    pub agent: LocalAgentConfig,
    pub notifications: NotificationsConfig,
    pub logs: LogsConfig,
    pub dags: DagsConfig,
}

/// Where DAG files come from, when not from `dags_folder`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DagsConfig {
    /// A DAG bundle: a git branch (`git+https://host/repo.git#main`, `git+file:///srv/dags#main`).
    /// Every server loads the same commit; default: none (the `dags_folder`).
    pub source: Option<String>,
    /// How often the bundle's branch is fetched (also on `POST /api/v1/dags/refresh`).
    pub refresh: String,
}

impl Default for DagsConfig {
    fn default() -> Self {
        DagsConfig {
            source: None,
            refresh: "60s".into(),
        }
    }
}

/// Where task logs are kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// An object store every server reads and writes (`s3://KEY:SECRET@BUCKET/PREFIX?endpoint=…
    /// &region=…`, `azure://ACCOUNT:KEY@CONTAINER/PREFIX`, `file:///shared/folder`): live logs
    /// in the metadata database, ended ones as objects. Default: `HOME/logs` of this server.
    pub store: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the HTTP server listens on.
    pub bind: String,
    /// PEM certificate chain: with `tls_key`, the server speaks HTTPS (rustls).
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// How often the DAG folder is read again.
    pub dag_scan_interval: String,
    /// How often retries, leases and queued runs are looked at when nothing else happens.
    pub housekeeping_interval: String,
    /// How long an attempt's lease lasts without a heartbeat.
    pub lease: String,
    /// How long a site task may wait queued with no connected agent of its site before it fails;
    /// "0s" waits for ever.
    pub queue_timeout: String,
    /// Most task instances one mapped task may expand to; a longer list fails the task
    /// (Airflow's `max_map_length`).
    pub max_map_length: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalAgentConfig {
    /// Whether this process runs tasks itself (the in-process agent).
    pub enabled: bool,
    /// Queues the local agent serves.
    pub queues: Vec<String>,
    /// Task attempts run at once.
    pub concurrency: usize,
    /// Python interpreter for `python` tasks.
    pub python: String,
    /// Time between SIGTERM and SIGKILL when a task must stop.
    pub kill_grace: String,
    /// Where python tasks' `requirements` are installed from: a package index URL instead of
    /// pip's default.
    pub pip_index_url: Option<String>,
    /// A folder of wheels; with it (and no `pip_index_url`) installs use only that folder.
    pub pip_find_links: Option<String>,
}

impl LocalAgentConfig {
    /// Where this agent's python environments install their packages from.
    pub fn pip_source(&self) -> tern_worker::venv::PipSource {
        tern_worker::venv::PipSource {
            index_url: self.pip_index_url.clone(),
            find_links: self.pip_find_links.clone(),
        }
    }
}

/// How DAG notifications (`on_failure`, `on_success`, `on_retry`) are sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// The web UI's address as users reach it (`https://tern.example.com`): notifications link
    /// to the run there. Without it they carry no link.
    pub base_url: Option<String>,
    /// Deadline of one try to send a notification.
    pub timeout: String,
    /// Waits between tries after a failure that may pass (a 5xx, a timeout): one try more than
    /// there are waits, then the notification is marked failed.
    pub retry_delays: Vec<String>,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            base_url: None,
            timeout: "30s".into(),
            retry_delays: ["10s", "30s", "2m", "10m"].map(String::from).to_vec(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            home: PathBuf::from("tern-home"),
            dags_folder: None,
            database_url: None,
            server: ServerConfig::default(),
            scheduler: SchedulerConfig::default(),
            agent: LocalAgentConfig::default(),
            notifications: NotificationsConfig::default(),
            logs: LogsConfig::default(),
            dags: DagsConfig::default(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: "127.0.0.1:8080".into(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            dag_scan_interval: "5s".into(),
            housekeeping_interval: "1s".into(),
            lease: "30s".into(),
            queue_timeout: "0s".into(),
            max_map_length: tern_core::mapping::DEFAULT_MAX_MAP_LENGTH,
        }
    }
}

impl Default for LocalAgentConfig {
    fn default() -> Self {
        LocalAgentConfig {
            enabled: true,
            queues: vec![tern_core::spec::DEFAULT_QUEUE.to_string()],
            concurrency: 32,
            python: "python3".into(),
            kill_grace: "5s".into(),
            pip_index_url: None,
            pip_find_links: None,
        }
    }
}

/// A setting that does not hold a valid value, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("setting {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    tern_core::parse_duration(value).map_err(|e| ConfigError {
        key: key.into(),
        message: e.to_string(),
    })
}

impl Config {
    /// The database URL in force.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.home.join("tern.db").display()))
    }

    pub fn dags_folder(&self) -> PathBuf {
        self.dags_folder
            .clone()
            .unwrap_or_else(|| self.home.join("dags"))
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.home.join("logs")
    }

    pub fn dags_refresh(&self) -> Result<Duration, ConfigError> {
        duration("dags.refresh", &self.dags.refresh)
    }

    pub fn dag_scan_interval(&self) -> Result<Duration, ConfigError> {
        duration(
            "scheduler.dag_scan_interval",
            &self.scheduler.dag_scan_interval,
        )
    }

    pub fn housekeeping_interval(&self) -> Result<Duration, ConfigError> {
        duration(
            "scheduler.housekeeping_interval",
            &self.scheduler.housekeeping_interval,
        )
    }

    pub fn lease(&self) -> Result<Duration, ConfigError> {
        duration("scheduler.lease", &self.scheduler.lease)
    }

    /// `None` when site tasks wait for ever.
    pub fn queue_timeout(&self) -> Result<Option<Duration>, ConfigError> {
        let d = duration("scheduler.queue_timeout", &self.scheduler.queue_timeout)?;
        Ok((!d.is_zero()).then_some(d))
    }

    pub fn kill_grace(&self) -> Result<Duration, ConfigError> {
        duration("agent.kill_grace", &self.agent.kill_grace)
    }

    pub fn notification_timeout(&self) -> Result<Duration, ConfigError> {
        duration("notifications.timeout", &self.notifications.timeout)
    }

    pub fn notification_retry_delays(&self) -> Result<Vec<Duration>, ConfigError> {
        self.notifications
            .retry_delays
            .iter()
            .map(|d| duration("notifications.retry_delays", d))
            .collect()
    }

    /// Checks every setting once, so a bad value fails at start-up with its key named.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.notification_timeout()?;
        self.notification_retry_delays()?;
        if let Some(url) = &self.notifications.base_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError {
                    key: "notifications.base_url".into(),
                    message: format!(
                        "{url:?} is not an http:// or https:// URL (the web UI's address, e.g. https://tern.example.com)"
                    ),
                });
            }
        }
        self.dag_scan_interval()?;
        self.dags_refresh()?;
        if let Some(source) = &self.dags.source {
            crate::bundle::DagBundle::parse(source, &self.home)?;
        }
        self.housekeeping_interval()?;
        self.lease()?;
        self.queue_timeout()?;
        if self.scheduler.max_map_length == 0 {
            return Err(ConfigError {
                key: "scheduler.max_map_length".into(),
                message: "must be at least 1 (the default is 1024)".into(),
            });
        }
        self.kill_grace()?;
        if let Some(q) = self.agent.queues.iter().find(|q| q.starts_with("site:")) {
            return Err(ConfigError {
                key: "agent.queues".into(),
                message: format!("{q:?} is a site queue: only agents of that site may serve it"),
            });
        }
        if self.agent.concurrency == 0 {
            return Err(ConfigError {
                key: "agent.concurrency".into(),
                message: "must be at least 1".into(),
            });
        }
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(ConfigError {
                    key: "server.tls_cert / server.tls_key".into(),
                    message: "give both the certificate and its key, or neither".into(),
                })
            }
            _ => {}
        }
        let url = self.database_url();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return Err(ConfigError {
                key: "database_url".into(),
                message: format!("{url:?} is not a sqlite:// or postgres:// URL"),
            });
        }
        Ok(())
    }
}

/// A database URL with its password hidden, for banners and `config show`.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_settings_are_checked_with_their_key_named() {
        let mut cfg = Config::default();
        assert_eq!(cfg.notification_retry_delays().unwrap().len(), 4);
        cfg.notifications.timeout = "soon".into();
        assert_eq!(cfg.validate().unwrap_err().key, "notifications.timeout");
        cfg.notifications.timeout = "30s".into();
        cfg.notifications.retry_delays = vec!["10s".into(), "later".into()];
        assert_eq!(
            cfg.validate().unwrap_err().key,
            "notifications.retry_delays"
        );
        cfg.notifications.retry_delays = vec![];
        cfg.notifications.base_url = Some("tern.example.com".into());
        let e = cfg.validate().unwrap_err();
        assert_eq!(e.key, "notifications.base_url");
        assert!(e.message.contains("https://tern.example.com"), "{e}");
    }
}
