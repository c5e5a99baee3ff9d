//! Configuration in two stages: raw flags (command line, environment, optional TOML file) become one
//! validated, immutable [`Config`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::auth::TokenKey;
use crate::store::{AppendFsync, Durability, Synchronous, SynchronousCommit};

/// Rusher: a WebSocket server for real-time apps, speaking Phoenix Channels V2.
///
/// Every flag can also be set through the environment variable shown, or in a TOML file given with
/// --config (keys are the flag names with '-' replaced by '_'). Precedence: flag, environment, file,
/// built-in default. Without a secret the server runs in open development mode: any client may
/// connect and name itself (socket parameter `user`), and `POST /dev/token` with `{"name": "..."}`
/// answers `{"user", "token"}`, a token signed with a key made at start (valid until the process
/// exits) that sockets accept like a real one. With a secret, /dev/token does not exist.
#[derive(Parser, Debug)]
#[command(name = "rusher", version, about, long_about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Subcommands besides serving.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Mint a signed token for a user, printed on stdout. Uses the same secret as the server.
    Token {
        /// The user id the token names (the presence key and chat author).
        #[arg(long)]
        user: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        ttl: u64,
        /// HMAC secret, as for the server.
        #[arg(long, env = "RUSHER_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Read the HMAC secret from this file.
        #[arg(long, env = "RUSHER_SECRET_FILE")]
        secret_file: Option<PathBuf>,
        /// Geofencing: object ids this user may move besides its own (`<user>` and `<user>/...`): an
        /// exact id, or a prefix ending with `*`. Repeatable. Pass the token as the `token` join
        /// parameter of a `geo:<tenant>` channel.
        #[arg(long = "geo-move", value_name = "PATTERN")]
        geo_move: Vec<String>,
        /// Geofencing: may create, update and delete fences.
        #[arg(long)]
        geo_admin: bool,
        /// Money: may credit wallets and create, change, suspend and settle bet markets. Pass the token
        /// as the `token` join parameter of `user:<self>` and `bet:<market>` channels.
        #[arg(long)]
        operator: bool,
    },
}

/// Flags of the server. Each is optional here so the TOML file can fill what the command line and
/// environment leave unset; defaults are applied in [`ServeArgs::resolve`].
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of these settings.
    #[arg(long, env = "RUSHER_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on (every worker binds it with SO_REUSEPORT). [default: 127.0.0.1:4000]
    #[arg(long, env = "RUSHER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Worker threads, one event loop each. [default: available cores]
    #[arg(long, env = "RUSHER_WORKERS")]
    pub workers: Option<usize>,
    /// Storage URL: sqlite://PATH (an embedded database file), postgres://USER[:PASSWORD]@HOST[:PORT]/DB
    /// (also postgresql://; libpq's URL form, e.g. ?connect_timeout=10) or
    /// redis://[[USER]:PASSWORD@]HOST[:PORT][/DB][?prefix=PREFIX] (keys under PREFIX, by default
    /// "rusher:"). [default: sqlite://rusher.db]
    #[arg(long, env = "RUSHER_STORE")]
    pub store: Option<String>,
    /// SQLite synchronous mode: full (fsync every commit; survives power loss), normal (survives a
    /// crash of the process, may lose the last commits on power loss) or off. [default: full]
    #[arg(long, env = "RUSHER_SQLITE_SYNCHRONOUS")]
    pub sqlite_synchronous: Option<String>,
    /// PostgreSQL synchronous_commit, set on every session: on (a commit returns once its WAL is on
    /// disk) or off (may lose the last commits if the database server crashes). [default: on]
    #[arg(long, env = "RUSHER_POSTGRES_SYNCHRONOUS_COMMIT")]
    pub postgres_synchronous_commit: Option<String>,
    /// Redis appendfsync, set with the append-only file switched on when the store opens: always (Redis
    /// fsyncs before it replies, so an acked write survives power loss), everysec (power loss may lose
    /// about the last second) or no (the OS decides when to flush). [default: always]
    #[arg(long, env = "RUSHER_REDIS_APPENDFSYNC")]
    pub redis_appendfsync: Option<String>,
    /// HMAC secret for client tokens (prefer RUSHER_SECRET or --secret-file to the command line).
    /// Without one the server runs in open development mode, with the sign-in endpoint
    /// POST /dev/token.
    #[arg(long, env = "RUSHER_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Read the HMAC secret from this file (surrounding whitespace ignored).
    #[arg(long, env = "RUSHER_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Close connections silent for this many seconds (clients heartbeat every 30). [default: 60]
    #[arg(long, env = "RUSHER_HEARTBEAT_TIMEOUT")]
    pub heartbeat_timeout: Option<u64>,
    /// Seconds a client has to complete the HTTP upgrade. [default: 10]
    #[arg(long, env = "RUSHER_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<u64>,
    /// Largest HTTP request head, in bytes (431 beyond). [default: 8192]
    #[arg(long, env = "RUSHER_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,
    /// Largest WebSocket message (and frame), in bytes (close 1009 beyond). [default: 65536]
    #[arg(long, env = "RUSHER_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,
    /// Outbound bytes queued for one slow connection before it is closed. [default: 1048576]
    #[arg(long, env = "RUSHER_MAX_OUTBOUND_BYTES")]
    pub max_outbound_bytes: Option<usize>,
    /// Channels one connection may join. [default: 100]
    #[arg(long, env = "RUSHER_MAX_CHANNELS")]
    pub max_channels: Option<usize>,
    /// Largest chat message body, in bytes. [default: 4096]
    #[arg(long, env = "RUSHER_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,
    /// Connections one worker holds before it stops accepting. [default: 1000000]
    #[arg(long, env = "RUSHER_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Messages a worker's inbox holds before senders drop. [default: 65536]
    #[arg(long, env = "RUSHER_INBOX_CAPACITY")]
    pub inbox_capacity: Option<usize>,
    /// Requests the storage queue holds before the server answers "overloaded". [default: 65536]
    #[arg(long, env = "RUSHER_STORE_QUEUE")]
    pub store_queue: Option<usize>,
    /// Messages sent on join and the most one history page returns. [default: 50 and 200]
    #[arg(long, env = "RUSHER_HISTORY_ON_JOIN")]
    pub history_on_join: Option<usize>,
    /// Enable the /autobahn echo endpoint for WebSocket conformance tests (16 MiB messages). Never in production.
    #[arg(long, env = "RUSHER_AUTOBAHN_ECHO", num_args = 0..=1, default_missing_value = "true")]
    pub autobahn_echo: Option<bool>,
    /// Largest collab (y-websocket) message, in bytes: a client's first sync can carry a whole
    /// document. [default: 8388608]
    #[arg(long, env = "RUSHER_MAX_COLLAB_MESSAGE_BYTES")]
    pub max_collab_message_bytes: Option<usize>,
    /// Largest collaborative document, in bytes of its encoded state (close 1009 beyond). [default: 67108864]
    #[arg(long, env = "RUSHER_MAX_DOC_BYTES")]
    pub max_doc_bytes: Option<usize>,
    /// Store a document snapshot (and drop the updates it covers) every this many updates. [default: 500]
    #[arg(long, env = "RUSHER_COLLAB_SNAPSHOT_EVERY")]
    pub collab_snapshot_every: Option<u64>,
    /// Seconds a document without editors stays in memory (snapshotted first). [default: 30]
    #[arg(long, env = "RUSHER_COLLAB_IDLE_SECS")]
    pub collab_idle_secs: Option<u64>,
    /// Geofencing: fences one tenant may hold. [default: 100000]
    #[arg(long, env = "RUSHER_GEO_MAX_FENCES")]
    pub geo_max_fences: Option<usize>,
    /// Geofencing: positions one fence's geometry may have, over all its rings. [default: 10000]
    #[arg(long, env = "RUSHER_GEO_MAX_VERTICES")]
    pub geo_max_vertices: Option<usize>,
    /// Geofencing: objects one tenant may track. [default: 1000000]
    #[arg(long, env = "RUSHER_GEO_MAX_OBJECTS")]
    pub geo_max_objects: Option<usize>,
    /// Geofencing: positions kept per object for `history` queries. [default: 10]
    #[arg(long, env = "RUSHER_GEO_HISTORY")]
    pub geo_history: Option<usize>,
    /// Serve the files of this directory over HTTP (the web app): read once at start, at most 64 MiB.
    /// [default: clients/web/dist when it exists]
    #[arg(long, env = "RUSHER_STATIC_DIR")]
    pub static_dir: Option<PathBuf>,
    /// Enable the /shootout endpoint (the websocket-shootout echo and broadcast protocol) for
    /// benchmarks against other servers. Any client may broadcast to all shootout clients.
    #[arg(long, env = "RUSHER_SHOOTOUT", num_args = 0..=1, default_missing_value = "true")]
    pub shootout: Option<bool>,
    /// Cluster mode: share topics with the other nodes on this Redis (redis://HOST[:PORT][/DB]).
    /// Chat rooms with presence, collaborative documents and geofencing tenants span the nodes; give
    /// every node the same shared --store (PostgreSQL). Without it the node is alone and makes no
    /// Redis call.
    #[arg(long, env = "RUSHER_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,
    /// Cluster mode: seconds after which a silent node's presences are removed and its owner leases
    /// expire, and a request forwarded to a topic's owner node gets an error. [default: 5]
    #[arg(long, env = "RUSHER_CLUSTER_TIMEOUT")]
    pub cluster_timeout: Option<u64>,
    /// Log filter, e.g. info or rusher_server=debug. [default: info]
    #[arg(long, env = "RUSHER_LOG")]
    pub log: Option<String>,
}

/// A setting that failed validation.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The TOML file could not be read or parsed.
    #[error("config file {path}: {msg}")]
    File { path: PathBuf, msg: String },
    /// A value is out of range or malformed.
    #[error("{0}")]
    Invalid(String),
}

/// Validated server settings. Immutable once built; shared by every worker.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub workers: usize,
    pub store_url: String,
    pub sqlite_synchronous: Synchronous,
    pub postgres_synchronous_commit: SynchronousCommit,
    pub redis_appendfsync: AppendFsync,
    /// `None`: open development mode.
    pub token_key: Option<TokenKey>,
    /// Random, made at start: signs the tokens of `POST /dev/token` and checks them on sockets. Used
    /// only while `token_key` is `None`, so such tokens never open a server that has a secret.
    pub dev_token_key: TokenKey,
    pub heartbeat_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_request_bytes: usize,
    pub max_message_bytes: usize,
    pub max_outbound_bytes: usize,
    pub max_channels: usize,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub inbox_capacity: usize,
    pub store_queue: usize,
    pub history_on_join: usize,
    pub history_max_page: usize,
    pub autobahn_echo: bool,
    pub shootout: bool,
    pub max_collab_message_bytes: usize,
    pub max_doc_bytes: usize,
    pub collab_snapshot_every: u64,
    pub collab_idle_secs: u64,
    pub geo_max_fences: usize,
    pub geo_max_vertices: usize,
    pub geo_max_objects: usize,
    pub geo_history: usize,
    /// The web app's files, when a static directory is served.
    pub static_files: Option<std::sync::Arc<crate::statics::StaticFiles>>,
    /// Cluster mode's settings; `None`: a node alone.
    pub cluster: Option<crate::cluster::Settings>,
    pub log: String,
}

impl ServeArgs {
    /// Merge the TOML file (if any) under the flags, apply defaults and validate.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| ConfigError::File { path: path.clone(), msg: e.to_string() })?;
                toml::from_str::<ServeArgs>(&text)
                    .map_err(|e| ConfigError::File { path: path.clone(), msg: e.to_string() })?
            }
            None => ServeArgs::default(),
        };
        let a = self;
        let f = file;
        let token_key =
            load_secret(a.secret.or(f.secret).as_deref(), a.secret_file.or(f.secret_file).as_deref())?;
        let workers = a
            .workers
            .or(f.workers)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
        let sync = match a.sqlite_synchronous.or(f.sqlite_synchronous).as_deref().unwrap_or("full") {
            "full" => Synchronous::Full,
            "normal" => Synchronous::Normal,
            "off" => Synchronous::Off,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "--sqlite-synchronous must be full, normal or off, not {other:?}"
                )))
            }
        };
        let synchronous_commit = match a
            .postgres_synchronous_commit
            .or(f.postgres_synchronous_commit)
            .as_deref()
            .unwrap_or("on")
        {
            "on" => SynchronousCommit::On,
            "off" => SynchronousCommit::Off,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "--postgres-synchronous-commit must be on or off, not {other:?}"
                )))
            }
        };
        let appendfsync = match a.redis_appendfsync.or(f.redis_appendfsync).as_deref().unwrap_or("always") {
            "always" => AppendFsync::Always,
            "everysec" => AppendFsync::EverySec,
            "no" => AppendFsync::No,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "--redis-appendfsync must be always, everysec or no, not {other:?}"
                )))
            }
        };
        let history_on_join = a.history_on_join.or(f.history_on_join).unwrap_or(50);
        let inbox_capacity = a.inbox_capacity.or(f.inbox_capacity).unwrap_or(65_536);
        let cluster_timeout = a.cluster_timeout.or(f.cluster_timeout).unwrap_or(5);
        if !(1..=3600).contains(&cluster_timeout) {
            return Err(ConfigError::Invalid("--cluster-timeout must be between 1 and 3600 seconds".into()));
        }
        let cluster = match a.cluster.or(f.cluster) {
            Some(url) if crate::cluster::valid_url(&url) => Some(crate::cluster::Settings {
                url,
                timeout: Duration::from_secs(cluster_timeout),
                queue: inbox_capacity,
            }),
            Some(url) => {
                return Err(ConfigError::Invalid(format!(
                    "--cluster must be redis://HOST[:PORT][/DB], not {:?}",
                    crate::cluster::redact(&url)
                )))
            }
            None => None,
        };
        let cfg = Config {
            listen: a.listen.or(f.listen).unwrap_or_else(|| "127.0.0.1:4000".parse().expect("valid default")),
            workers,
            store_url: a.store.or(f.store).unwrap_or_else(|| "sqlite://rusher.db".into()),
            sqlite_synchronous: sync,
            postgres_synchronous_commit: synchronous_commit,
            redis_appendfsync: appendfsync,
            token_key,
            dev_token_key: TokenKey::new(&crate::sys::random_bytes::<32>().map_err(|e| {
                ConfigError::Invalid(format!("cannot read random bytes for the development token key: {e}"))
            })?),
            heartbeat_timeout: Duration::from_secs(a.heartbeat_timeout.or(f.heartbeat_timeout).unwrap_or(60)),
            handshake_timeout: Duration::from_secs(a.handshake_timeout.or(f.handshake_timeout).unwrap_or(10)),
            max_request_bytes: a.max_request_bytes.or(f.max_request_bytes).unwrap_or(8192),
            max_message_bytes: a.max_message_bytes.or(f.max_message_bytes).unwrap_or(65_536),
            max_outbound_bytes: a.max_outbound_bytes.or(f.max_outbound_bytes).unwrap_or(1 << 20),
            max_channels: a.max_channels.or(f.max_channels).unwrap_or(100),
            max_body_bytes: a.max_body_bytes.or(f.max_body_bytes).unwrap_or(4096),
            max_connections: a.max_connections.or(f.max_connections).unwrap_or(1_000_000),
            inbox_capacity,
            store_queue: a.store_queue.or(f.store_queue).unwrap_or(65_536),
            history_on_join,
            history_max_page: history_on_join.max(200),
            autobahn_echo: a.autobahn_echo.or(f.autobahn_echo).unwrap_or(false),
            shootout: a.shootout.or(f.shootout).unwrap_or(false),
            max_collab_message_bytes: a
                .max_collab_message_bytes
                .or(f.max_collab_message_bytes)
                .unwrap_or(8 << 20),
            max_doc_bytes: a.max_doc_bytes.or(f.max_doc_bytes).unwrap_or(64 << 20),
            collab_snapshot_every: a.collab_snapshot_every.or(f.collab_snapshot_every).unwrap_or(500),
            collab_idle_secs: a.collab_idle_secs.or(f.collab_idle_secs).unwrap_or(30),
            geo_max_fences: a.geo_max_fences.or(f.geo_max_fences).unwrap_or(100_000),
            geo_max_vertices: a.geo_max_vertices.or(f.geo_max_vertices).unwrap_or(10_000),
            geo_max_objects: a.geo_max_objects.or(f.geo_max_objects).unwrap_or(1_000_000),
            geo_history: a.geo_history.or(f.geo_history).unwrap_or(10),
            static_files: static_files(a.static_dir.or(f.static_dir))?,
            cluster,
            log: a.log.or(f.log).unwrap_or_else(|| "info".into()),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Default directory of the web app, served when it exists.
pub const DEFAULT_STATIC_DIR: &str = "clients/web/dist";

/// The static files to serve: the directory given (which must load), else the default one if present.
fn static_files(
    dir: Option<PathBuf>,
) -> Result<Option<std::sync::Arc<crate::statics::StaticFiles>>, ConfigError> {
    let (dir, required) = match dir {
        Some(d) => (d, true),
        None => (PathBuf::from(DEFAULT_STATIC_DIR), false),
    };
    if !required && !dir.is_dir() {
        return Ok(None);
    }
    crate::statics::StaticFiles::load(&dir)
        .map(|s| Some(std::sync::Arc::new(s)))
        .map_err(|e| ConfigError::Invalid(format!("--static-dir: {e}")))
}

/// The token key from a secret given inline or in a file, if either is configured.
pub fn load_secret(
    secret: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<TokenKey>, ConfigError> {
    {
        let secret = match (secret, file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid("give either --secret or --secret-file, not both".into()))
            }
            (Some(s), None) => s.trim().to_owned(),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| ConfigError::File { path: path.to_path_buf(), msg: e.to_string() })?
                .trim()
                .to_owned(),
            (None, None) => return Ok(None),
        };
        if secret.len() < 16 {
            return Err(ConfigError::Invalid("the secret must be at least 16 bytes long".into()));
        }
        Ok(Some(TokenKey::new(secret.as_bytes())))
    }
}

impl Config {
    /// The durability settings handed to the storage backend.
    pub fn durability(&self) -> Durability {
        Durability {
            sqlite: self.sqlite_synchronous,
            postgres: self.postgres_synchronous_commit,
            redis: self.redis_appendfsync,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.workers == 0 || self.workers > crate::mailbox::ConnId::MAX_WORKERS {
            return bad(format!("--workers must be 1..=256, not {}", self.workers));
        }
        if self.heartbeat_timeout < Duration::from_secs(1) {
            return bad("--heartbeat-timeout must be at least 1 second".into());
        }
        if self.handshake_timeout < Duration::from_secs(1) {
            return bad("--handshake-timeout must be at least 1 second".into());
        }
        if !(1024..=1 << 20).contains(&self.max_request_bytes) {
            return bad("--max-request-bytes must be between 1024 and 1048576".into());
        }
        if !(128..=1 << 30).contains(&self.max_message_bytes) {
            return bad("--max-message-bytes must be between 128 and 1 GiB".into());
        }
        if self.max_outbound_bytes < self.max_message_bytes.min(1 << 20) {
            return bad("--max-outbound-bytes must hold at least one message".into());
        }
        if self.max_channels == 0 || self.max_body_bytes == 0 || self.history_on_join == 0 {
            return bad("--max-channels, --max-body-bytes and --history-on-join must be positive".into());
        }
        if self.max_body_bytes + 512 > self.max_message_bytes {
            return bad("--max-body-bytes must leave room for the envelope within --max-message-bytes".into());
        }
        if self.max_connections == 0 || self.max_connections > u32::MAX as usize {
            return bad("--max-connections must be between 1 and 2^32-1".into());
        }
        if self.max_collab_message_bytes < 1024 || self.max_doc_bytes < self.max_collab_message_bytes {
            return bad("--max-collab-message-bytes must be at least 1024 and at most --max-doc-bytes".into());
        }
        if self.collab_snapshot_every == 0 {
            return bad("--collab-snapshot-every must be positive".into());
        }
        if !(1..=10_000_000).contains(&self.geo_max_fences)
            || !(4..=1_000_000).contains(&self.geo_max_vertices)
            || !(1..=100_000_000).contains(&self.geo_max_objects)
            || self.geo_history > 1000
        {
            return bad("--geo-max-fences must be 1..=10000000, --geo-max-vertices 4..=1000000, \
                --geo-max-objects 1..=100000000 and --geo-history at most 1000"
                .into());
        }
        if self.inbox_capacity < 64 || self.store_queue < 64 {
            return bad("--inbox-capacity and --store-queue must be at least 64".into());
        }
        Ok(())
    }

    /// Message bound on the /autobahn echo endpoint (Autobahn's 9.* cases send 16 MiB messages).
    pub fn echo_max_message_bytes(&self) -> usize {
        self.max_message_bytes.max(32 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let cfg = ServeArgs::default().resolve().unwrap();
        assert_eq!(cfg.listen.port(), 4000);
        assert!(cfg.token_key.is_none());
        assert_eq!(cfg.sqlite_synchronous, Synchronous::Full);
        assert_eq!(cfg.postgres_synchronous_commit, SynchronousCommit::On);
        assert_eq!(cfg.redis_appendfsync, AppendFsync::Always);
        assert_eq!(cfg.heartbeat_timeout, Duration::from_secs(60));
    }

    #[test]
    fn file_fills_what_flags_leave_unset() {
        let dir = std::env::temp_dir().join(format!("rusher-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rusher.toml");
        std::fs::write(
            &path,
            "workers = 3\nmax_channels = 7\nsecret = \"0123456789abcdef0\"\nredis_appendfsync = \"no\"\n",
        )
        .unwrap();
        let args = ServeArgs { config: Some(path), max_channels: Some(9), ..Default::default() };
        let cfg = args.resolve().unwrap();
        assert_eq!(cfg.workers, 3);
        assert_eq!(cfg.max_channels, 9, "the flag wins over the file");
        assert!(cfg.token_key.is_some());
        assert_eq!(cfg.redis_appendfsync, AppendFsync::No);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn bad_values_are_refused_with_a_reason() {
        let args = ServeArgs { workers: Some(0), ..Default::default() };
        assert!(args.resolve().unwrap_err().to_string().contains("--workers"));
        let args = ServeArgs { sqlite_synchronous: Some("sometimes".into()), ..Default::default() };
        assert!(args.resolve().unwrap_err().to_string().contains("synchronous"));
        let args = ServeArgs { postgres_synchronous_commit: Some("local".into()), ..Default::default() };
        assert!(args.resolve().unwrap_err().to_string().contains("--postgres-synchronous-commit"));
        let args = ServeArgs { postgres_synchronous_commit: Some("off".into()), ..Default::default() };
        assert_eq!(args.resolve().unwrap().postgres_synchronous_commit, SynchronousCommit::Off);
        let args = ServeArgs { redis_appendfsync: Some("sometimes".into()), ..Default::default() };
        assert!(args.resolve().unwrap_err().to_string().contains("--redis-appendfsync"));
        let args = ServeArgs { redis_appendfsync: Some("everysec".into()), ..Default::default() };
        assert_eq!(args.resolve().unwrap().durability().redis, AppendFsync::EverySec);
        let args = ServeArgs { secret: Some("short".into()), ..Default::default() };
        assert!(args.resolve().unwrap_err().to_string().contains("16 bytes"));
        let args = ServeArgs { cluster: Some("http://u:pw@h".into()), ..Default::default() };
        let err = args.resolve().unwrap_err().to_string();
        assert!(err.contains("--cluster") && !err.contains("pw"), "{err}");
        let args =
            ServeArgs { cluster: Some("redis://h".into()), cluster_timeout: Some(0), ..Default::default() };
        assert!(args.resolve().unwrap_err().to_string().contains("--cluster-timeout"));
        let args = ServeArgs { cluster: Some("redis://127.0.0.1:6379".into()), ..Default::default() };
        let settings = args.resolve().unwrap().cluster.unwrap();
        assert_eq!(settings.timeout, Duration::from_secs(5));
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = std::env::temp_dir().join(format!("rusher-cfg2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rusher.toml");
        std::fs::write(&path, "wrokers = 3\n").unwrap();
        let err = ServeArgs { config: Some(path), ..Default::default() }.resolve().unwrap_err();
        assert!(err.to_string().contains("wrokers"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
