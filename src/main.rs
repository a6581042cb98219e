//! The `tickcast` command: `serve` runs the gateway, `config` prints the effective
//! configuration, `client` talks to a running server.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use tickcast::{
    config::{Config, DriverKind, Engine, Overrides},
    topology::Server,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tickcast",
    version,
    about = "WebSocket fan-out gateway for trading systems"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Driver {
    Auto,
    /// Spelled as in the config file; `io-uring` is accepted too.
    #[value(name = "io_uring", alias = "io-uring")]
    IoUring,
    Epoll,
}

#[derive(clap::Args)]
struct ConfigArgs {
    /// TOML configuration file (defaults apply to every key it omits).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address, e.g. 0.0.0.0:8080 (overrides server.listen).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Number of shards, 0 = one per core (overrides server.shards).
    #[arg(long, value_name = "N")]
    shards: Option<usize>,
    /// Run the synthetic market-data publisher (sets server.demo_feed).
    #[arg(long)]
    demo_feed: bool,
    /// Serve GET /echo for conformance testing (sets server.echo).
    #[arg(long)]
    echo: bool,
    /// io driver (overrides server.driver).
    #[arg(long, value_enum)]
    driver: Option<Driver>,
    /// TLS (wss://) listen address, e.g. 0.0.0.0:8443 (overrides tls.listen).
    #[arg(long, value_name = "ADDR")]
    tls_listen: Option<String>,
    /// PEM certificate chain for the TLS listener (overrides tls.cert_file).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<String>,
    /// PEM private key for the TLS listener (overrides tls.key_file).
    #[arg(long, value_name = "FILE")]
    tls_key: Option<String>,
    /// Cluster engine: memory, nats or redis (overrides cluster.engine).
    #[arg(long, value_enum, value_name = "ENGINE")]
    cluster: Option<ClusterEngine>,
    /// Broker URL, nats://host:port (several NATS servers: comma-separated) or
    /// redis://host:port (overrides cluster.url).
    #[arg(long, value_name = "URL")]
    broker: Option<String>,
    /// This node's id in the cluster (overrides cluster.node_id).
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Start beside a tickcast already listening on the address (sets server.takeover): the
    /// new process of a zero-downtime restart; then drain the old one with SIGUSR2.
    #[arg(long)]
    takeover: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum ClusterEngine {
    Memory,
    Nats,
    Redis,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve(ConfigArgs),
    /// Print the effective configuration (file + environment + flags) as TOML and exit.
    Config(ConfigArgs),
    /// Check a configuration file (with the environment's `TICKCAST_*` settings, as `serve`
    /// would read it): every key, the key and certificate files it names. Exit 0 if `serve`
    /// would accept it, 2 with the reason if not. Starts nothing.
    CheckConfig {
        /// The TOML file.
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the SHA-256 of an API key (for `[[auth.api_keys]] sha256`); the key is read from
    /// stdin so it stays out of shell history.
    HashKey {
        /// Generate a new random key and print it with its hash.
        #[arg(long)]
        generate: bool,
    },
    /// Connect to a running server and type commands (sub, unsub, pub, ping, auth, history;
    /// `help` lists them); one line per server message. Reconnects with `since` when the
    /// connection drops.
    Client(ClientArgs),
}

#[derive(clap::Args)]
struct ClientArgs {
    /// ws://HOST:PORT/ws or wss://…; `HOST:PORT` alone means ws://HOST:PORT/ws.
    #[arg(value_name = "URL")]
    url: String,
    /// A JWT or API key, sent as `Authorization: Bearer` at every (re)connect.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Print the server's messages verbatim, one JSON text per line (the client's own notes go
    /// to stderr).
    #[arg(long)]
    json: bool,
    /// Close normally and exit after N data frames.
    #[arg(long, value_name = "N")]
    exit_after: Option<u64>,
    /// A PEM CA certificate to trust for wss://, besides the built-in Mozilla roots.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Exit with status 1 when the connection drops instead of reconnecting.
    #[arg(long)]
    no_reconnect: bool,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config, String> {
        let overrides = Overrides {
            listen: self.listen.clone(),
            shards: self.shards,
            demo_feed: self.demo_feed,
            echo: self.echo,
            driver: self.driver.map(|d| match d {
                Driver::Auto => DriverKind::Auto,
                Driver::IoUring => DriverKind::IoUring,
                Driver::Epoll => DriverKind::Epoll,
            }),
            tls_listen: self.tls_listen.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            cluster_engine: self.cluster.map(|e| match e {
                ClusterEngine::Memory => Engine::Memory,
                ClusterEngine::Nats => Engine::Nats,
                ClusterEngine::Redis => Engine::Redis,
            }),
            cluster_url: self.broker.clone(),
            node_id: self.node_id.clone(),
            takeover: self.takeover,
        };
        let cfg = Config::load(self.config.as_deref(), &overrides)?;
        // Key files, secrets and permission patterns are checked here too, so
        // `tickcast config` catches what `serve` would refuse.
        tickcast::auth::Auth::from_config(&cfg)?;
        Ok(cfg)
    }
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Config(args) => match args.load() {
            Ok(cfg) => {
                print!("{}", cfg.to_toml());
                0
            }
            Err(e) => {
                eprintln!("tickcast: {e}");
                2
            }
        },
        Command::HashKey { generate } => hash_key(generate),
        Command::CheckConfig { file } => check_config(&file),
        Command::Client(args) => tickcast::client::run(tickcast::client::Options {
            url: args.url,
            token: args.token,
            json: args.json,
            exit_after: args.exit_after,
            ca_file: args.ca,
            no_reconnect: args.no_reconnect,
        }),
        Command::Serve(args) => match args.load() {
            // SIGHUP loads the same way again: the same file, environment and flags.
            Ok(cfg) => serve(cfg, Box::new(move || args.load())),
            Err(e) => {
                eprintln!("tickcast: {e}");
                2
            }
        },
    };
    std::process::exit(code);
}

fn check_config(file: &std::path::Path) -> i32 {
    let checked = Config::load(Some(file), &Overrides::default()).and_then(|cfg| {
        tickcast::auth::Auth::from_config(&cfg)?;
        if cfg.tls_listen_addr().is_some() {
            tickcast::tls::TlsState::load(&cfg.tls)?;
        }
        Ok(())
    });
    match checked {
        Ok(()) => {
            println!("{}: valid", file.display());
            0
        }
        Err(e) => {
            eprintln!("tickcast: {}: {e}", file.display());
            2
        }
    }
}

fn hash_key(generate: bool) -> i32 {
    let key = if generate {
        match tickcast::auth::generate_api_key() {
            Ok(key) => {
                println!("key:    {key}");
                key
            }
            Err(e) => {
                eprintln!("tickcast: {e}");
                return 1;
            }
        }
    } else {
        let mut line = String::new();
        if std::io::stdin().read_line(&mut line).is_err() {
            eprintln!("tickcast: cannot read the key from stdin");
            return 2;
        }
        let key = line.trim_end_matches(['\r', '\n']).to_string();
        if key.is_empty() {
            eprintln!(
                "tickcast: pipe the key on stdin, e.g. `printf %s \"$KEY\" | tickcast hash-key`, or use --generate"
            );
            return 2;
        }
        key
    };
    println!("sha256: {}", tickcast::auth::hash_api_key(&key));
    0
}

/// Loads the configuration again for a reload.
type Loader = Box<dyn Fn() -> Result<Config, String> + Send>;

/// Lowers `limits.connections_max` to what `RLIMIT_NOFILE` (`nofile`) leaves room for with
/// `shards` shards; the value it had if it did.
fn fit_to_nofile(cfg: &mut Config, nofile: u64, shards: usize) -> Option<usize> {
    let fits = nofile
        .saturating_sub(tickcast::limits::reserved_descriptors(shards))
        .saturating_sub(tickcast::limits::HTTP_HEADROOM);
    let was = cfg.limits.connections_max;
    if (was as u64) <= fits {
        return None;
    }
    cfg.limits.connections_max = fits.max(1) as usize;
    Some(was)
}

fn serve(mut cfg: Config, load: Loader) -> i32 {
    init_logging(&cfg.log);
    exit_on_panic();
    if !tickcast::sys::disable_transparent_huge_pages() {
        tracing::debug!("could not opt out of transparent huge pages");
    }
    // Every open connection is a descriptor, and so is every handshake in flight; the soft
    // limit is raised to the hard one, and the connection limit lowered to what fits.
    let nofile = tickcast::sys::raise_nofile_limit();
    let shards = tickcast::topology::shard_count(&cfg);
    if let Some(was) = fit_to_nofile(&mut cfg, nofile, shards) {
        tracing::info!(
            rlimit_nofile = nofile,
            "limits.connections_max {was} lowered to {}: RLIMIT_NOFILE allows no more \
             (raise LimitNOFILE, see tuning/README.md)",
            cfg.limits.connections_max,
        );
    }
    let demo = cfg.server.demo_feed;
    let echo = cfg.server.echo;
    let limits = cfg.limits.clone();
    let tick_ms = cfg.timeouts.tick_ms;
    let deflate = cfg.deflate.enabled;
    let server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tickcast: {e}");
            return 1;
        }
    };
    tracing::info!(
        shards = server.drivers.len(),
        drivers = ?server.drivers,
        demo_feed = demo,
        echo,
        "tickcast {} started",
        env!("CARGO_PKG_VERSION")
    );
    // One line with the limits in force (after RLIMIT_NOFILE lowered any): what an operator
    // checks first when clients are refused or closed.
    tracing::info!(
        rlimit_nofile = nofile,
        connections_max = limits.connections_max,
        connections_per_ip_max = limits.connections_per_ip_max,
        handshakes_per_shard_max = limits.handshakes_per_shard_max,
        connect_rate_per_ip_per_s = limits.connect_rate_per_ip_per_s,
        message_bytes_max = limits.message_bytes_max,
        publish_data_bytes_max = limits.publish_data_bytes_max,
        write_queue_bytes_max = limits.write_queue_bytes_max,
        subscriptions_per_conn_max = limits.subscriptions_per_conn_max,
        client_messages_per_s = limits.client_messages_per_s,
        topics_per_shard_max = limits.topics_per_shard_max,
        partial_bytes_max = limits.partial_bytes_max,
        deflate,
        "limits in force"
    );
    // Registered before the address lines: whoever reads them may signal at once (SIGHUP's
    // default action would end the process).
    let signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
        signal_hook::consts::SIGUSR2,
    ]);
    // Machine-readable for scripts and tests: the lines tickcast prints on stdout.
    println!("listening on {}", server.local_addr);
    if let Some(addr) = server.tls_addr {
        // Second line, after the plain one (scripts read the first). A reader that closed the
        // pipe after the first line must not kill the server.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "tls listening on {addr}").and_then(|()| out.flush());
    }
    let stopper = server.stopper();
    let mut reloader = server.reloader();
    // systemd `Type=notify`: up now that every shard listens; status and watchdog from here.
    let monitor = server.monitor();
    let notifier = tickcast::service::Notifier::from_env(tick_ms);
    if let Some(n) = notifier {
        n.ready(&monitor);
        if let Err(e) = n.spawn(monitor.clone()) {
            tracing::warn!(error = %e, "no status or watchdog thread");
        }
    }
    match signals {
        Ok(mut signals) => {
            std::thread::Builder::new()
                .name("tickcast-signals".into())
                .spawn(move || {
                    let mut seen = 0;
                    for sig in signals.forever() {
                        if sig == signal_hook::consts::SIGHUP {
                            if let Some(n) = notifier {
                                n.reloading();
                            }
                            let failed = reload(&mut reloader, &load, nofile);
                            if let Some(n) = notifier {
                                n.reloaded(&monitor, failed.as_deref());
                            }
                            continue;
                        }
                        if sig == signal_hook::consts::SIGUSR2 {
                            if seen == 0 {
                                tracing::info!(
                                    drain_s = reloader.running().timeouts.drain_s,
                                    "draining: no new connections; closing clients with 1012 \
                                     over timeouts.drain_s, then exiting"
                                );
                                if let Some(n) = notifier {
                                    n.stopping();
                                }
                                stopper.drain();
                            }
                            continue;
                        }
                        seen += 1;
                        if seen == 1 {
                            if let Some(n) = notifier {
                                n.stopping();
                            }
                            tracing::info!(
                                signal = sig,
                                "shutting down: closing connections with 1001"
                            );
                            stopper.stop();
                        } else {
                            tracing::warn!("second signal: exiting now");
                            std::process::exit(1);
                        }
                    }
                })
                .expect("spawn signal thread");
        }
        Err(e) => tracing::warn!(error = %e, "no signal handling: SIGTERM will not drain"),
    }
    if !server.join() {
        // Only without the panic hook (which exits first): never report a crash as a clean stop.
        tracing::error!("a shard thread ended abnormally");
        return 70;
    }
    tracing::info!("tickcast stopped");
    0
}

/// Any panic, on any thread (a shard, the cluster bridge, the signal thread), ends the process
/// with status 70 and the panic in the log: a crashed shard would otherwise leave its topics
/// silently undelivered while `/health` still answers. The service manager restarts it.
fn exit_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // The standard report (thread, message, location; a backtrace with RUST_BACKTRACE).
        default(info);
        let thread = std::thread::current();
        tracing::error!(
            thread = thread.name().unwrap_or("unnamed"),
            "{info}; exiting with status 70"
        );
        std::process::exit(70);
    }));
}

/// SIGHUP: loads the configuration again (file, environment, flags) and puts it in force
/// (`Reloader::reload`); a file that fails leaves the running configuration as it was.
/// Returns why the reload failed, if it did.
fn reload(
    reloader: &mut tickcast::topology::Reloader,
    load: &Loader,
    nofile: u64,
) -> Option<String> {
    // The running shard count: `server.shards` changes only with a restart.
    let running = reloader.running();
    let shards = tickcast::topology::shard_count(running);
    let was_max = running.limits.connections_max;
    let loaded = load().map(|mut cfg| {
        if let Some(was) = fit_to_nofile(&mut cfg, nofile, shards) {
            // Said at start already, unless the file changed it.
            if cfg.limits.connections_max != was_max {
                tracing::info!(
                    rlimit_nofile = nofile,
                    "limits.connections_max {was} lowered to {}: RLIMIT_NOFILE allows no more",
                    cfg.limits.connections_max,
                );
            }
        }
        cfg
    });
    let done = reloader.reload(loaded);
    let r = match done {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(
                error = %e,
                "SIGHUP: configuration not reloaded; the running configuration stays in force"
            );
            return Some(e);
        }
    };
    if r.tls_reloaded {
        tracing::info!("SIGHUP: TLS certificate reloaded");
    }
    if !r.restart_needed.is_empty() {
        tracing::warn!(
            keys = %r.restart_needed.join(", "),
            "SIGHUP: changed settings that take effect only after a restart; their running \
             values stay"
        );
    }
    if r.late_shards > 0 {
        tracing::warn!(
            shards = r.late_shards,
            "SIGHUP: shards busy; they apply the new configuration when they get to it"
        );
    }
    let applied = if r.applied.is_empty() {
        "nothing".to_string()
    } else {
        r.applied.join(", ")
    };
    tracing::info!(
        changed = %applied,
        connections_closed = r.closed,
        subscriptions_withdrawn = r.withdrawn,
        rights_changed = r.rights_changed,
        "SIGHUP: configuration reloaded"
    );
    None
}

/// Logs to stderr: `log.format` text (colours only on a terminal, `NO_COLOR` respected: a
/// service manager's journal gets plain lines) or JSON, one event per line.
fn init_logging(log: &tickcast::config::Log) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match log.format {
        tickcast::config::LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(ansi).init();
        }
        tickcast::config::LogFormat::Json => builder.json().init(),
    }
}
