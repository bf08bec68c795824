//! How the service runs: the daily schedule, paths, HTTP (address, token,
//! limits), storage, sinks and plugin limits.

use super::{S, Validator, parse_hhmm};
use crate::config::file::{ConfigFile, StorageFile};
use crate::config::{MAX_PARTITIONS, Paths, Sink};
use std::path::Path;

/// The longest `storage.dedup_window` or `storage.outbox_retention`: a
/// hundred years, which covers any history; more is a typo.
pub const MAX_STORAGE_DAYS: i64 = 36_500;

impl Validator<'_> {
    /// The local time of the daily tick, in minutes after midnight.
    pub(super) fn daily_at(&mut self, f: &ConfigFile) -> u16 {
        match f.schedule.as_ref().and_then(|s| s.daily_at.as_ref()) {
            Some(s) => parse_hhmm(s).unwrap_or_else(|| {
                self.err(
                    s,
                    format!("`{}` is not a time of day", s.as_str()),
                    Some("write `HH:MM`, e.g. `09:00`".into()),
                );
                540
            }),
            None => 540,
        }
    }

    /// The rules, plugins and data folders, relative to the config.
    pub(super) fn paths(&mut self, f: &ConfigFile, base: &Path) -> Paths {
        let path = |p: Option<&S>, default: &str| base.join(p.map_or(default, |s| s.as_str()));
        Paths {
            rules: path(f.paths.as_ref().and_then(|p| p.rules.as_ref()), "rules"),
            plugins: path(f.paths.as_ref().and_then(|p| p.plugins.as_ref()), "plugins"),
            data: path(f.paths.as_ref().and_then(|p| p.data.as_ref()), "data"),
        }
    }

    /// The address to listen on and the token.
    pub(super) fn listen_and_token(&mut self, f: &ConfigFile) -> (String, Option<String>) {
        let listen = match f.http.as_ref().and_then(|h| h.listen.as_ref()) {
            Some(l) => {
                if l.parse::<std::net::SocketAddr>().is_err() {
                    self.err(
                        l,
                        format!("`{}` is not an address to listen on", l.as_str()),
                        Some("write `HOST:PORT`, e.g. `127.0.0.1:8080`".into()),
                    );
                }
                l.to_string()
            }
            None => "127.0.0.1:8080".into(),
        };
        let token = f.http.as_ref().and_then(|h| h.token.as_ref());
        if let Some(t) = token
            && t.trim().is_empty()
        {
            self.err(
                t,
                "an empty `http.token` would turn authentication off",
                Some("set a long random string, or leave `token` out to answer only loopback names without one".into()),
            );
        }
        let token = token.map(|t| t.to_string());
        (listen, token)
    }

    /// sled's page cache (`storage.cache_mb`), if given.
    pub(super) fn cache_bytes(&mut self, f: &ConfigFile) -> Option<u64> {
        f.storage
            .as_ref()
            .and_then(|st| self.positive(&st.cache_mb))
            .map(|mb| mb.saturating_mul(1 << 20))
    }

    /// `storage.partitions`: 1 to [`MAX_PARTITIONS`].
    pub(super) fn partitions(&mut self, f: &ConfigFile) -> usize {
        let Some(s) = f.storage.as_ref().and_then(|st| st.partitions.as_ref()) else {
            return 1;
        };
        match s.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_PARTITIONS).contains(&n) => n,
            _ => {
                self.err(
                    s,
                    format!("`{}` is not a number of partitions", s.as_str().trim()),
                    Some(format!("write a whole number from 1 to {MAX_PARTITIONS}, e.g. twice the machine's cores")),
                );
                1
            }
        }
    }

    /// A `storage:` duration in whole days (`30d`), at most
    /// [`MAX_STORAGE_DAYS`], or its default.
    pub(super) fn storage_days(
        &mut self,
        f: &ConfigFile,
        key: impl Fn(&StorageFile) -> Option<&S>,
        default: i32,
    ) -> i32 {
        let Some(s) = f.storage.as_ref().and_then(key) else {
            return default;
        };
        match self.duration_days(s) {
            Some(d) if d > MAX_STORAGE_DAYS => {
                self.err(
                    s,
                    format!("`{}` is more than 100 years", s.as_str().trim()),
                    Some(format!("write at most `{MAX_STORAGE_DAYS}d`")),
                );
                default
            }
            Some(d) => d as i32,
            None => default,
        }
    }

    /// Where effects go.
    pub(super) fn sinks(&mut self, f: &ConfigFile, base: &Path) -> Vec<Sink> {
        let mut sinks = Vec::new();
        for s in &f.sinks {
            let need = |v: &mut Self, field: &Option<S>, what: &str| -> Option<String> {
                match field {
                    Some(x) => Some(x.to_string()),
                    None => {
                        v.err(
                            &s.kind,
                            format!("a `{}` sink needs `{what}`", s.kind.as_str()),
                            None,
                        );
                        None
                    }
                }
            };
            match s.kind.as_str() {
                "file" => {
                    if let Some(p) = need(self, &s.path, "path") {
                        sinks.push(Sink::File { path: base.join(p) });
                    }
                }
                "webhook" => {
                    if let Some(u) = need(self, &s.url, "url") {
                        if u.starts_with("https://") {
                            self.err(
                                s.url.as_ref().unwrap_or(&s.kind),
                                format!("`{u}`: https webhooks need TLS, which this build of nudge leaves out"),
                                Some("use an http:// URL (a relay on this machine or in your network)".into()),
                            );
                        } else if !u.starts_with("http://") {
                            self.err(
                                s.url.as_ref().unwrap_or(&s.kind),
                                format!("`{u}` is not an http(s) URL"),
                                None,
                            );
                        }
                        sinks.push(Sink::Webhook { url: u });
                    }
                }
                "plugin" => {
                    if let Some(p) = need(self, &s.plugin, "plugin") {
                        sinks.push(Sink::Plugin { plugin: p });
                    }
                }
                other => self.err(
                    &s.kind,
                    format!("unknown sink kind `{other}`"),
                    Some("sink kinds are: file, webhook, plugin".into()),
                ),
            }
        }
        sinks
    }
}
