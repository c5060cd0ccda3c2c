//! The command line (clap). Management commands go to a running server over the admin
//! socket, or — when none answers — straight to the store; either way
//! [`crate::admin::execute`] does the work.

use crate::admin::{self, AdminError, Command, NewClient, NewUser, Secret};
use crate::app::App;
use crate::clock::{SharedClock, SystemClock};
use crate::config::Config;
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "mgpass",
    version,
    about = "OpenID Connect provider and rewards platform"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(long, global = true, env = "MGPASS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Top,
}

#[derive(Subcommand)]
pub enum Top {
    /// Run the server.
    Serve,
    /// Manage relying-party clients.
    #[command(subcommand)]
    Client(ClientCmd),
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage signing keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Manage partners and their API keys.
    #[command(subcommand)]
    Partner(PartnerCmd),
    /// List or reload WebAssembly plugins.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Drive a running server with load and report latencies per scenario.
    Bench(crate::bench::BenchArgs),
}

#[derive(Subcommand)]
pub enum PluginCmd {
    /// Every plugin with its state, hooks and routes.
    List,
    /// Load plugins again (files, built-ins and their config) without a restart.
    Reload,
}

#[derive(Args, Default)]
pub struct PartnerFields {
    #[arg(long)]
    name: Option<String>,
    /// An event type the partner may post (repeat for several).
    #[arg(long = "event-type")]
    event_types: Vec<String>,
    /// Points multiplier (default 1.0).
    #[arg(long)]
    multiplier: Option<f64>,
    /// Where signed webhooks go (https, or http on loopback); "" removes it.
    #[arg(long)]
    webhook_url: Option<String>,
}

impl PartnerFields {
    fn spec(self, enabled: Option<bool>) -> crate::partner::PartnerSpec {
        crate::partner::PartnerSpec {
            name: self.name,
            event_types: (!self.event_types.is_empty()).then_some(self.event_types),
            multiplier: self.multiplier,
            webhook_url: self.webhook_url,
            enabled,
        }
    }
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("when").required(true).args(["now", "overlap"])))]
pub struct RotateArgs {
    id: String,
    /// The old credential stops working at once (use after a compromise).
    #[arg(long)]
    now: bool,
    /// Both work for this long (e.g. "24h"), then the old one stops.
    #[arg(long, value_parser = humantime::parse_duration)]
    overlap: Option<std::time::Duration>,
}

impl RotateArgs {
    fn overlap_secs(&self) -> Option<u64> {
        self.overlap.map(|d| d.as_secs().max(1))
    }
}

#[derive(Subcommand)]
pub enum PartnerCmd {
    /// Create a partner; prints its id, API key and webhook secret once.
    Add {
        #[command(flatten)]
        fields: PartnerFields,
    },
    List,
    Show {
        id: String,
    },
    /// Change a partner's settings.
    Update {
        id: String,
        #[command(flatten)]
        fields: PartnerFields,
        /// Re-enable a disabled partner.
        #[arg(long)]
        enable: bool,
    },
    /// Refuse the partner's keys from now on.
    Disable {
        id: String,
    },
    /// Issue a new API key (printed once).
    RotateKey(RotateArgs),
    /// Issue a new webhook secret (printed once).
    RotateWebhookSecret(RotateArgs),
}

#[derive(Subcommand)]
pub enum ClientCmd {
    /// Register a client.
    Add(ClientAddArgs),
    List,
    Show {
        id: String,
    },
    Remove {
        id: String,
    },
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("auth").required(true).args(["secret", "generate_secret", "public"])))]
pub struct ClientAddArgs {
    #[arg(long)]
    id: String,
    /// Use this client secret (at least 16 characters).
    #[arg(long)]
    secret: Option<String>,
    /// Generate a secret and print it once.
    #[arg(long)]
    generate_secret: bool,
    /// A public client (no secret; PKCE only).
    #[arg(long)]
    public: bool,
    #[arg(long = "redirect-uri", required = true)]
    redirect_uris: Vec<String>,
    #[arg(long = "post-logout-redirect-uri")]
    post_logout_redirect_uris: Vec<String>,
    #[arg(long)]
    backchannel_logout_uri: Option<String>,
    #[arg(long)]
    backchannel_logout_session_required: bool,
    #[arg(long)]
    name: Option<String>,
    /// Skip the consent page for this client.
    #[arg(long)]
    first_party: bool,
    /// ID token signing algorithm: ES256 (default) or RS256.
    #[arg(long)]
    id_token_alg: Option<String>,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("pw").required(true).args(["password", "password_stdin"])))]
pub struct PasswordArgs {
    #[arg(long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
}

#[derive(Subcommand)]
pub enum UserCmd {
    /// Create a user.
    Add {
        #[arg(long)]
        username: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "role")]
        roles: Vec<String>,
        #[command(flatten)]
        password: PasswordArgs,
    },
    List,
    /// Show a user (by id, username or email).
    Show {
        user: String,
    },
    Remove {
        user: String,
    },
    SetPassword {
        user: String,
        #[command(flatten)]
        password: PasswordArgs,
    },
    GrantRole {
        user: String,
        role: String,
    },
    RevokeRole {
        user: String,
        role: String,
    },
    /// End every session of the user everywhere.
    Logout {
        user: String,
    },
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Add a signing key: published now, signing after the activation delay.
    Rotate {
        /// Sign with the new key at once.
        #[arg(long)]
        now: bool,
    },
    List,
}

fn read_password(args: PasswordArgs) -> Result<String, AdminError> {
    if let Some(p) = args.password {
        return Ok(p);
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .map_err(|e| AdminError::Invalid(format!("cannot read password from stdin: {e}")))?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

fn to_command(top: Top) -> Result<Command, AdminError> {
    Ok(match top {
        Top::Serve | Top::Bench(_) => unreachable!("serve and bench are handled before"),
        Top::Client(ClientCmd::Add(a)) => Command::ClientAdd(NewClient {
            id: a.id,
            secret: match (a.secret, a.generate_secret) {
                (Some(s), _) => Secret::Given(s),
                (None, true) => Secret::Generate,
                (None, false) => Secret::Public,
            },
            redirect_uris: a.redirect_uris,
            post_logout_redirect_uris: a.post_logout_redirect_uris,
            backchannel_logout_uri: a.backchannel_logout_uri,
            backchannel_logout_session_required: a.backchannel_logout_session_required,
            name: a.name,
            first_party: a.first_party,
            id_token_alg: a.id_token_alg,
        }),
        Top::Client(ClientCmd::List) => Command::ClientList,
        Top::Client(ClientCmd::Show { id }) => Command::ClientShow { id },
        Top::Client(ClientCmd::Remove { id }) => Command::ClientRemove { id },
        Top::User(UserCmd::Add {
            username,
            email,
            name,
            roles,
            password,
        }) => Command::UserAdd(NewUser {
            username,
            email,
            name,
            roles,
            password: read_password(password)?,
        }),
        Top::User(UserCmd::List) => Command::UserList,
        Top::User(UserCmd::Show { user }) => Command::UserShow { user },
        Top::User(UserCmd::Remove { user }) => Command::UserRemove { user },
        Top::User(UserCmd::SetPassword { user, password }) => Command::UserSetPassword {
            user,
            password: read_password(password)?,
        },
        Top::User(UserCmd::GrantRole { user, role }) => Command::UserGrantRole { user, role },
        Top::User(UserCmd::RevokeRole { user, role }) => Command::UserRevokeRole { user, role },
        Top::User(UserCmd::Logout { user }) => Command::UserLogout { user },
        Top::Keys(KeysCmd::Rotate { now }) => Command::KeysRotate { now },
        Top::Keys(KeysCmd::List) => Command::KeysList,
        Top::Plugin(PluginCmd::List) => Command::PluginList,
        Top::Plugin(PluginCmd::Reload) => Command::PluginReload,
        Top::Partner(PartnerCmd::Add { fields }) => Command::PartnerAdd(fields.spec(None)),
        Top::Partner(PartnerCmd::List) => Command::PartnerList,
        Top::Partner(PartnerCmd::Show { id }) => Command::PartnerShow { id },
        Top::Partner(PartnerCmd::Update { id, fields, enable }) => Command::PartnerUpdate {
            id,
            spec: fields.spec(enable.then_some(true)),
        },
        Top::Partner(PartnerCmd::Disable { id }) => Command::PartnerUpdate {
            id,
            spec: crate::partner::PartnerSpec {
                enabled: Some(false),
                ..Default::default()
            },
        },
        Top::Partner(PartnerCmd::RotateKey(r)) => Command::PartnerRotateKey {
            overlap_secs: r.overlap_secs(),
            id: r.id,
        },
        Top::Partner(PartnerCmd::RotateWebhookSecret(r)) => Command::PartnerRotateWebhookSecret {
            overlap_secs: r.overlap_secs(),
            id: r.id,
        },
    })
}

/// Human-readable output: one `key: value` per line, records separated by a blank line.
fn print_human(value: &Value) {
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print_human(item);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                match v {
                    Value::String(s) => println!("{k}: {s}"),
                    Value::Null => println!("{k}: -"),
                    other => println!("{k}: {other}"),
                }
            }
        }
        other => println!("{other}"),
    }
}

fn load_config(cli_path: Option<PathBuf>) -> Result<Config, String> {
    let explicit = cli_path.is_some();
    let path = cli_path.unwrap_or_else(|| PathBuf::from("config.toml"));
    Config::load(&path, explicit).map_err(|e| e.to_string())
}

async fn run_command(config: Config, command: Command) -> Result<Value, AdminError> {
    match admin::socket::send(&config.admin_socket_path(), &command).await {
        Ok(answer) => answer,
        Err(_) => {
            // No server answers: open the store ourselves.
            let clock: SharedClock = Arc::new(SystemClock);
            let app = App::open(config, clock).map_err(|e| AdminError::Failed(e.to_string()))?;
            let result = admin::execute(&app, command).await;
            app.store
                .flush_blocking()
                .map_err(|e| AdminError::Failed(e.to_string()))?;
            result
        }
    }
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::install_crypto_provider();
    let config = match load_config(cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mgpass: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("mgpass: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Top::Serve = cli.command {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .init();
        return match runtime.block_on(crate::server::run(config, Arc::new(SystemClock))) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mgpass: {e}");
                ExitCode::from(2)
            }
        };
    }
    if let Top::Bench(args) = cli.command {
        return crate::bench::cli_main(&runtime, config, args, cli.json);
    }
    let result =
        to_command(cli.command).and_then(|command| runtime.block_on(run_command(config, command)));
    match result {
        Ok(value) => {
            if cli.json {
                println!("{value:#}");
            } else {
                print_human(&value);
            }
            ExitCode::SUCCESS
        }
        Err(AdminError::Invalid(m)) => {
            eprintln!("mgpass: {m}");
            ExitCode::from(2)
        }
        Err(AdminError::Failed(m)) => {
            eprintln!("mgpass: {m}");
            ExitCode::FAILURE
        }
    }
}
