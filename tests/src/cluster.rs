//! Throw-away PostgreSQL clusters of the tests' own, for what the shared test server
//! cannot show: a primary with a hot standby streaming from it, a server stopped and
//! started again under load. Made with the machine's PostgreSQL server binaries (the
//! ones `scripts/lib/postgres.sh` finds or installs), as the OS user `postgres` when the
//! tests run as root (PostgreSQL refuses root), in a temporary directory that is stopped
//! and removed when the value is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// One running cluster on 127.0.0.1.
pub struct Cluster {
    bindir: PathBuf,
    data: PathBuf,
    /// Removed with the last cluster made in it.
    root: PathBuf,
    pub port: u16,
    owns_root: bool,
}

impl Cluster {
    /// A new primary that streams its WAL to standbys, trust authentication.
    pub fn primary() -> anyhow::Result<Self> {
        let cluster = Self::initialized()?;
        cluster.start()?;
        Ok(cluster)
    }

    /// A primary's data directory, made and configured but not started.
    fn initialized() -> anyhow::Result<Self> {
        let bindir = server_bindir().context("no PostgreSQL server binaries (initdb) found")?;
        let root = std::env::temp_dir().join(format!("hms-cluster-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&root)?;
        give_to_postgres(&root)?;
        let data = root.join("primary");
        let cluster = Self {
            bindir,
            data,
            root,
            port: free_port()?,
            owns_root: true,
        };
        cluster.run(
            "initdb",
            &[
                "-D",
                path(&cluster.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
            ],
        )?;
        cluster.configure(&["wal_level = replica", "max_wal_senders = 4"])?;
        Ok(cluster)
    }

    /// A primary reached over TCP only with TLS (`hostnossl` connections are refused),
    /// with a certificate for 127.0.0.1 and `localhost` signed by a CA of its own
    /// ([`Self::ca_file`]); made with the `openssl` program.
    pub fn primary_with_tls() -> anyhow::Result<Self> {
        let cluster = Self::initialized()?;
        let tls = cluster.root.join("tls");
        std::fs::create_dir_all(&tls)?;
        let file = |name: &str| path(&tls.join(name)).to_owned();
        let extensions = tls.join("server.ext");
        std::fs::write(
            &extensions,
            "subjectAltName = DNS:localhost, IP:127.0.0.1\n\
             extendedKeyUsage = serverAuth\n\
             basicConstraints = critical, CA:FALSE\n",
        )?;
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-days",
                    "2",
                    "-subj",
                    "/CN=hms test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                    "-keyout",
                    &file("ca.key"),
                    "-out",
                    &file("ca.crt"),
                ],
            ]
            .concat(),
        )?;
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-subj",
                    "/CN=localhost",
                    "-keyout",
                    &file("server.key"),
                    "-out",
                    &file("server.csr"),
                ],
            ]
            .concat(),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            &file("server.csr"),
            "-CA",
            &file("ca.crt"),
            "-CAkey",
            &file("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            path(&extensions),
            "-out",
            &file("server.crt"),
        ])?;
        give_to_postgres_recursively(&tls)?;
        set_mode(&tls.join("server.key"), 0o600)?;
        std::fs::write(
            cluster.data.join("pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostssl replication all 127.0.0.1/32 trust\n\
             hostnossl all all 0.0.0.0/0 reject\n",
        )?;
        cluster.configure(&[
            "ssl = on",
            &format!("ssl_cert_file = '{}'", file("server.crt")),
            &format!("ssl_key_file = '{}'", file("server.key")),
        ])?;
        cluster.start()?;
        Ok(cluster)
    }

    /// The CA that signed a [`Self::primary_with_tls`] server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.root.join("tls").join("ca.crt")
    }

    /// A hot standby of `primary`, streaming from it.
    pub fn standby_of(primary: &Cluster) -> anyhow::Result<Self> {
        let cluster = Self {
            bindir: primary.bindir.clone(),
            data: primary.root.join("standby"),
            root: primary.root.clone(),
            port: free_port()?,
            owns_root: false,
        };
        cluster.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
                path(&cluster.data),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        )?;
        cluster.configure(&["hot_standby = on"])?;
        cluster.start()?;
        Ok(cluster)
    }

    pub fn options(&self, database: &str) -> PgConnectOptions {
        let options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(self.port)
            .username("postgres")
            .database(database);
        let ca = self.ca_file();
        if ca.exists() {
            options.ssl_mode(PgSslMode::VerifyFull).ssl_root_cert(ca)
        } else {
            options.ssl_mode(PgSslMode::Disable)
        }
    }

    /// Appends settings (later lines win), with this cluster's port and sockets.
    fn configure(&self, settings: &[&str]) -> anyhow::Result<()> {
        let mut conf = format!(
            "\nlisten_addresses = '127.0.0.1'\nport = {}\nunix_socket_directories = '{}'\nfsync = off\n",
            self.port,
            self.root.display()
        );
        for s in settings {
            conf.push_str(s);
            conf.push('\n');
        }
        let file = self.data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&file)?;
        text.push_str(&conf);
        std::fs::write(&file, text)?;
        Ok(())
    }

    /// Stops the server the way a crash does (`pg_ctl stop -m immediate`: no checkpoint,
    /// every connection dropped at once); [`Self::start`] then runs crash recovery.
    pub fn stop_immediately(&self) -> anyhow::Result<()> {
        self.run(
            "pg_ctl",
            &["-D", path(&self.data), "-m", "immediate", "-w", "stop"],
        )
    }

    /// Starts the server (again) on the same port, waiting until it accepts connections.
    pub fn start(&self) -> anyhow::Result<()> {
        let log = self.root.join(format!("{}.log", self.port));
        self.run(
            "pg_ctl",
            &[
                "-D",
                path(&self.data),
                "-l",
                path(&log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        )
    }

    /// Runs one of the server binaries, as `postgres` when we are root.
    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let program = self.bindir.join(tool);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        let output = command
            .args(args)
            .current_dir("/")
            .output()
            .with_context(|| format!("running {tool}"))?;
        if !output.status.success() {
            bail!(
                "{tool} failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop_immediately();
        if self.owns_root {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn give_to_postgres(dir: &Path) -> anyhow::Result<()> {
    if is_root() {
        let status = Command::new("chown")
            .args(["postgres:postgres", path(dir)])
            .status()?;
        if !status.success() {
            bail!("chown of {} failed", dir.display());
        }
    }
    Ok(())
}

fn openssl(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("openssl")
        .args(args)
        .output()
        .context("running openssl")?;
    if !output.status.success() {
        bail!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn give_to_postgres_recursively(dir: &Path) -> anyhow::Result<()> {
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres", path(dir)])
            .status()?;
        if !status.success() {
            bail!("chown of {} failed", dir.display());
        }
    }
    Ok(())
}

fn set_mode(file: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb`, else `pg_config
/// --bindir`.
fn server_bindir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Some(bin);
    }
    let out = Command::new("pg_config").arg("--bindir").output().ok()?;
    let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    bin.join("initdb").exists().then_some(bin)
}
