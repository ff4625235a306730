//! The `samlgate` command: `serve`, `check`, `metadata`, `demo`. The only user of anyhow.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the proxy allocates and frees many small buffers per request; glibc malloc showed
/// up at ~6% of the gateway's CPU profile under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use samlgate::config::Config;
use samlgate::demo::DemoPorts;

#[derive(Parser)]
#[command(
    name = "samlgate",
    version,
    about = "SAML 2.0 SSO gateway with just-in-time SCIM provisioning"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file (default: $SAMLGATE_CONFIG, then config/samlgate.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Load and validate the whole config; print `config ok` or every problem.
    Check {
        /// Config file (default: $SAMLGATE_CONFIG, then config/samlgate.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Print the SP metadata XML (give it to your IdP).
    Metadata {
        /// Config file (default: $SAMLGATE_CONFIG, then config/samlgate.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// A self-contained local demo: the gateway on http://127.0.0.1:8080 in front of a demo
    /// dashboard, with a development IdP and an in-memory SCIM admin API (loopback only).
    Demo {
        /// The gateway's port (0 = any free port).
        #[arg(long, default_value_t = DemoPorts::default().gateway)]
        port: u16,
        /// The gateway admin listener's port (/healthz, /readyz, /metrics).
        #[arg(long, default_value_t = DemoPorts::default().admin)]
        admin_port: u16,
        /// The development IdP's port.
        #[arg(long, default_value_t = DemoPorts::default().idp)]
        idp_port: u16,
        /// The demo dashboard's (and its SCIM API's) port.
        #[arg(long, default_value_t = DemoPorts::default().dashboard)]
        dashboard_port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => check(Config::resolve_path(config)),
        Command::Serve { config } => serve(Config::resolve_path(config)),
        Command::Metadata { config } => metadata(Config::resolve_path(config)),
        Command::Demo {
            port,
            admin_port,
            idp_port,
            dashboard_port,
        } => demo(DemoPorts {
            gateway: port,
            admin: admin_port,
            idp: idp_port,
            dashboard: dashboard_port,
        }),
    }
}

fn load_or_report(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|err| report(path, &err.problems))
}

/// Prints every problem of the config at `path`; exit code 2.
fn report(path: &std::path::Path, problems: &[String]) -> ExitCode {
    eprintln!("config {} is invalid:", path.display());
    for p in problems {
        eprintln!("  - {p}");
    }
    ExitCode::from(2)
}

fn check(path: PathBuf) -> ExitCode {
    let config = match load_or_report(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let problems = samlgate::app::validate(&config);
    if let samlgate::config::IdpMetadataSource::Url { .. } = &config.saml.idp_metadata {
        eprintln!(
            "note: saml.idp_metadata_url is parsed, not fetched, by check; serve fetches it (and refuses metadata without a signing certificate)"
        );
    }
    if problems.is_empty() {
        println!("config ok");
        ExitCode::SUCCESS
    } else {
        report(&path, &problems)
    }
}

fn metadata(path: PathBuf) -> ExitCode {
    let config = match load_or_report(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Our metadata depends only on our own config, so it prints without the IdP's (a
    // metadata URL is not fetched).
    match samlgate::saml::sp_metadata_from_config(&config.saml) {
        Ok(xml) => {
            println!("{xml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("samlgate: {e}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn serve(path: PathBuf) -> ExitCode {
    let config = match load_or_report(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    samlgate::telemetry::init_logging(&config.log);
    let problems = samlgate::app::validate(&config);
    if !problems.is_empty() {
        for p in &problems {
            tracing::error!(problem = %p, "invalid configuration");
        }
        return ExitCode::from(2);
    }
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let running =
                samlgate::server::start(config, samlgate::server::shutdown_signal()).await?;
            tracing::info!(listen = %running.addr, admin = %running.admin_addr, "samlgate serving");
            running.wait().await;
            tracing::info!("samlgate stopped");
            Ok::<_, anyhow::Error>(())
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let message = error_chain(&e);
            tracing::error!(error = %message, "samlgate failed");
            eprintln!("samlgate: {message}");
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line, `": "`-joined, each cause said once: an error whose
/// message already includes its source's (`cannot listen on … : Address already in use`) is
/// not followed by that source again.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// `samlgate demo`: everything on loopback until SIGINT/SIGTERM, then exit 0.
fn demo(ports: DemoPorts) -> ExitCode {
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let demo = samlgate::demo::start(ports).await?;
            samlgate::telemetry::init_logging(&demo.running.app.config.log);
            println!("{}", demo.instructions());
            samlgate::server::shutdown_signal().await;
            println!("\nStopping the demo…");
            demo.shutdown().await;
            Ok::<_, anyhow::Error>(())
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("samlgate demo: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
