//! The subcommands of `hms`. Each validates its input before it touches a database and
//! reports failure as one line (the caller prints it) with a non-zero exit.

use std::io::BufRead;

use anyhow::{bail, Context};
use hms_domain::common::{Email, Username};
use tokio::net::TcpListener;

use hms_app::application::{Application, ServeSettings};
use hms_app::auth::password;
use hms_app::state::Platform;
use hms_app::tenancy::backup::{backup_hospital, restore_hospital, PgTools};
use hms_app::tenancy::migrate::migrate_all;
use hms_app::tenancy::moving::{self, MoveProgress, MoveStep};
use hms_app::tenancy::provisioning::{NewHospital, ProvisionOutcome};
use hms_app::tenancy::servers::NewServer;
use hms_app::tenancy::TenancyError;

use crate::config::{
    Cli, Command, Environment, PlatformConfig, Secret, ServeConfig, ServersCommand,
    SetupHospitalArgs,
};

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = cli.platform;
    let production = config.environment == Environment::Production;
    // Before anything reads or writes an event: personal data is sealed under it.
    let keyring = config.keyring().map_err(|e| anyhow::anyhow!(e))?;
    if let Err(e) = hms_projections::personal::install(keyring) {
        tracing::debug!(%e, "master keys already installed");
    }
    match cli
        .command
        .unwrap_or_else(|| Command::Serve(ServeConfig::from_env()))
    {
        Command::Serve(serve_config) => serve(&config, &serve_config, production).await,
        Command::Migrate { concurrency } => {
            let platform = Platform::connect(&config).await?;
            println!("platform database: up to date");
            let report = migrate_all(
                &platform.control,
                &platform.directory,
                &platform.servers,
                &platform.naming,
                concurrency,
                |done, total, db, result| match result {
                    Ok(n) => println!("[{done}/{total}] {db}: {n} migration(s) applied"),
                    Err(e) => println!("[{done}/{total}] {db}: FAILED: {e}"),
                },
            )
            .await?;
            println!(
                "{} database(s), {} migration(s) applied, {} failed",
                report.databases,
                report.migrations_applied,
                report.failures.len()
            );
            if !report.failures.is_empty() {
                bail!(
                    "{} tenant database(s) could not be migrated; re-run after fixing the cause",
                    report.failures.len()
                );
            }
            Ok(())
        }
        Command::CreateSuperadmin {
            username,
            email,
            password,
        } => {
            let username = Username::parse(&username)?;
            let email = Email::parse(&email)?;
            let password = read_password(password)?;
            password::check_policy(&password)?;
            let platform = Platform::connect(&config).await?;
            let hash = password::hash(password).await?;
            let created =
                hms_app::auth::create_super_admin(&platform.control, &username, &email, &hash)
                    .await
                    .context("Failed to store the super administrator")?;
            if !created {
                bail!("a super administrator named {username} exists already");
            }
            println!("super administrator {username} created");
            Ok(())
        }
        Command::SetupHospital(args) => setup_hospital(&config, args).await,
        Command::Servers(command) => servers(&config, command).await,
        Command::RotateMasterKey => {
            let platform = Platform::connect(&config).await?;
            let current = hms_projections::personal::keyring().current_id().to_owned();
            let (mut total, mut left) = (0, 0i64);
            for tenant in platform.directory.list().await? {
                let options = platform
                    .servers
                    .options(&tenant.db_server)
                    .await?
                    .database(&tenant.database_name);
                let mut conn = hms_app::tenancy::platform::connect_once(&options).await?;
                let rewrapped = hms_projections::personal::rewrap_all(&mut conn)
                    .await
                    .with_context(|| format!("rewrapping the keys of {}", tenant.code))?;
                // A replica still writing under an old key leaves some behind.
                let behind: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM patient_keys \
                      WHERE wrapped_key IS NOT NULL AND master_key_id <> $1",
                )
                .bind(&current)
                .fetch_one(&mut conn)
                .await?;
                println!("{}: {rewrapped} key(s) rewrapped", tenant.code);
                total += rewrapped;
                left += behind;
            }
            if left == 0 {
                println!(
                    "{total} key(s) rewrapped; every key is under master key {current}: \
                     HMS_MASTER_KEY_PREVIOUS can be emptied"
                );
            } else {
                println!(
                    "{total} key(s) rewrapped; {left} key(s) were written under another key \
                     meanwhile (a process with an old HMS_MASTER_KEY?): keep \
                     HMS_MASTER_KEY_PREVIOUS and run this again"
                );
            }
            Ok(())
        }
        Command::BackupHospital { code, output } => {
            let platform = Platform::connect(&config).await?;
            let tools = PgTools::discover();
            let manifest = backup_hospital(&platform, &tools, &code, &output).await?;
            println!(
                "hospital {} backed up to {}: {} events, head {}, recorded head {}, dump {} bytes (sha256 {})",
                manifest.code,
                output.display(),
                manifest.events,
                manifest.head.as_deref().unwrap_or("none"),
                manifest.recorded_head.as_deref().unwrap_or("none"),
                manifest.dump_bytes,
                manifest.dump_sha256
            );
            Ok(())
        }
        Command::RestoreHospital {
            input,
            as_code,
            server,
        } => {
            let platform = Platform::connect(&config).await?;
            let tools = PgTools::discover();
            let restored = restore_hospital(
                &platform,
                &tools,
                &input,
                as_code.as_deref(),
                server.as_deref(),
            )
            .await?;
            println!(
                "hospital {} restored into {}: {} events, head {} verified, {} transaction id(s) re-based",
                restored.code,
                restored.database_name,
                restored.events,
                restored.head.as_deref().unwrap_or("none"),
                restored.rebased_transactions
            );
            Ok(())
        }
        Command::MoveHospital {
            code,
            to,
            abort,
            stop_after,
        } => {
            let platform = Platform::connect(&config).await?;
            if abort {
                let step = moving::abort_move(&platform, &code).await?;
                println!("the move of {code} is aborted (it stood at {step:?}); the hospital stays where it was");
                return Ok(());
            }
            let tools = PgTools::discover();
            let stop_after = stop_after.as_deref().and_then(MoveStep::from_name);
            let report = moving::move_hospital(
                &platform,
                &tools,
                &code,
                to.as_deref(),
                stop_after,
                &print_move_progress,
            )
            .await?;
            let held = report
                .writes_held
                .map_or_else(|| "-".to_owned(), |d| format!("{} ms", d.as_millis()));
            if report.done {
                println!(
                    "hospital {} moved from {} to {}: {} events copied, writes held {held}, total {:.1} s",
                    report.code,
                    report.from,
                    report.to,
                    report.events,
                    report.total.as_secs_f64()
                );
            } else {
                println!(
                    "the move of {} to {} is paused at {:?} (run `hms move-hospital {}` to resume, or with --abort); writes held {held}",
                    report.code, report.to, report.step, report.code
                );
            }
            Ok(())
        }
        Command::PrintSchema => {
            print!("{}", crate::graphql::sdl());
            Ok(())
        }
        Command::Tenants => {
            let platform = Platform::connect(&config).await?;
            let tenants = platform.directory.list().await?;
            println!(
                "{:<16} {:<12} {:<12} {:<28} {:<16} NAME",
                "CODE", "STATUS", "PLAN", "DATABASE", "SERVER"
            );
            for t in &tenants {
                println!(
                    "{:<16} {:<12} {:<12} {:<28} {:<16} {}",
                    t.code,
                    t.status.as_str(),
                    t.plan,
                    t.database_name,
                    t.db_server,
                    t.name
                );
            }
            println!("{} hospital(s)", tenants.len());
            Ok(())
        }
    }
}

async fn setup_hospital(config: &PlatformConfig, args: SetupHospitalArgs) -> anyhow::Result<()> {
    let password = read_password(args.admin_password)?;
    password::check_policy(&password)?;
    // Validate everything before any connection is made; the hash comes last because
    // it is the slow part.
    let mut request = NewHospital::parse(
        &args.code,
        &args.name,
        &args.plan,
        &args.admin_username,
        &args.admin_email,
        &args.admin_name,
        String::new(),
    )?
    .on_server(args.server)?;
    request.admin.password_hash = password::hash(password).await?;
    let platform = Platform::connect(config).await?;
    match platform.provisioner().provision(&request).await {
        Ok(ProvisionOutcome::Ready {
            database_name,
            resumed,
        }) => {
            if resumed {
                println!("completed the interrupted provisioning of {}", request.code);
            }
            println!(
                "hospital {} ({}) is ready: database {database_name}, administrator {}",
                request.code, request.name, request.admin.username
            );
            Ok(())
        }
        Ok(ProvisionOutcome::StoppedAfter(step)) => {
            bail!("provisioning stopped after {}", step.as_str())
        }
        Err(TenancyError::AlreadyExists(code)) => {
            bail!("a hospital with code {code} exists already; nothing was changed")
        }
        Err(e) => Err(e.into()),
    }
}

async fn servers(config: &PlatformConfig, command: ServersCommand) -> anyhow::Result<()> {
    let platform = Platform::connect(config).await?;
    let servers = &platform.servers;
    match command {
        ServersCommand::Add {
            name,
            url,
            capacity,
            budget,
        } => {
            let new = NewServer {
                name,
                url: url.expose().to_owned(),
                capacity,
                connection_budget: budget,
            };
            let role = platform.naming.writer_role();
            let warning = servers
                .add(&new, &role, config.tenant_role_password.as_ref())
                .await?;
            if let Some(warning) = warning {
                eprintln!("warning: {warning}");
            }
            println!("database server {} added", new.name);
        }
        ServersCommand::List => {
            println!(
                "{:<16} {:<40} {:<11} {:>9} {:>9} {:>7}  status",
                "name", "address", "tls", "hospitals", "capacity", "budget"
            );
            for s in servers.list().await? {
                let budget = s.connection_budget.map_or_else(
                    || config.tenant_connection_budget.to_string(),
                    |b| b.to_string(),
                );
                println!(
                    "{:<16} {:<40} {:<11} {:>9} {:>9} {:>7}  {}",
                    s.name,
                    s.address,
                    s.tls,
                    s.hospitals,
                    s.capacity,
                    budget,
                    if s.draining { "draining" } else { "open" }
                );
            }
        }
        ServersCommand::Drain { name, undo } => {
            servers.set_draining(&name, !undo).await?;
            if undo {
                println!("database server {name} receives new hospitals again");
            } else {
                println!("database server {name} is draining: no new hospitals are placed on it");
            }
        }
        ServersCommand::Remove { name } => {
            servers.remove(&name).await?;
            println!("database server {name} removed");
        }
    }
    Ok(())
}

async fn serve(
    platform: &PlatformConfig,
    config: &ServeConfig,
    production: bool,
) -> anyhow::Result<()> {
    let settings = ServeSettings {
        jwt_secret: config.jwt_secret.clone(),
        token_ttl: chrono::Duration::minutes(config.token_ttl_minutes.clamp(1, 24 * 60)),
        production,
        max_concurrent_hashes: config.max_concurrent_password_hashes,
        request_budget_per_minute: config.request_budget_per_minute,
        background_work: config.background_work,
    };
    let application = Application::build(platform, &settings).await?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("Failed to listen on {}", config.listen))?;
    tracing::info!(address = %config.listen, "serving GraphQL on http://{}/graphql", config.listen);
    let mut options = crate::http::HttpOptions::new(config.graphiql, &config.cors_origins)
        .and_then(|o| o.with_trusted_proxies(&config.trusted_proxies))
        .map_err(anyhow::Error::msg)?;
    // Never on a production API listener: the figures name hospitals and volumes.
    options.metrics = config.metrics_listen.is_none() && !production;
    if production && config.metrics_listen.is_none() {
        tracing::warn!("metrics are not served: set HMS_METRICS_LISTEN to an address the monitoring network reaches");
    }
    let metrics_server = match config.metrics_listen {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .with_context(|| format!("Failed to listen on {address} for metrics"))?;
            tracing::info!(%address, "serving metrics on http://{address}/metrics");
            let router = crate::metrics::router(application.state().clone());
            Some(tokio::spawn(
                async move { axum::serve(listener, router).await },
            ))
        }
        None => None,
    };
    let draining = options.draining.clone();
    let router = crate::http::app(application.state().clone(), options);
    let plan = crate::http::Shutdown {
        drain: std::time::Duration::from_secs(config.drain_seconds),
        finish: std::time::Duration::from_secs(config.shutdown_timeout_seconds),
    };
    application
        .run(crate::http::run(
            listener,
            router,
            shutdown_signal(),
            draining,
            plan,
        ))
        .await?;
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    Ok(())
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}

/// `-` means: read one line from standard input (so a password need not be in shell
/// history or the process list).
fn read_password(given: Secret) -> anyhow::Result<String> {
    if given.expose() != "-" {
        return Ok(given.expose().to_owned());
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("Failed to read the password from standard input")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// One line per step of a move, as it goes.
fn print_move_progress(progress: MoveProgress) {
    match progress {
        MoveProgress::Resumed { step } => println!("resuming the move at {step}"),
        MoveProgress::Copied { events, took } => println!(
            "copied while serving: {events} events in {:.1} s, verified",
            took.as_secs_f64()
        ),
        MoveProgress::Round { events } => println!("caught up while serving: {events} more events"),
        MoveProgress::Held => println!("writes held on the source"),
        MoveProgress::Verified { head } => println!(
            "the rest copied; both logs end at {}",
            head.as_deref().unwrap_or("nothing")
        ),
        MoveProgress::Switched { held } => println!(
            "switched: the directory names the new server; writes were held {} ms",
            held.as_millis()
        ),
        MoveProgress::SourceDropped => println!("the source database is dropped"),
    }
}
