//! The users file, `<data dir>/users.toml`: argon2 hashes, never passwords. Read at start,
//! re-read whenever it changes (so `spool-server user ...` applies to a running server), and
//! edited by the `user` subcommands.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use spool_domain::Role;
use spool_http::{Authenticator, UserRecord, hash_password, verify_password};
use tracing::{error, info, warn};

/// How often a running server checks the users file for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Serialize, Deserialize)]
struct UsersFile {
    #[serde(default, rename = "user")]
    users: Vec<UserRecord>,
}

/// Returns the path of the users file in `data_dir`.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join("users.toml")
}

fn read(path: &Path) -> anyhow::Result<Vec<UserRecord>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: UsersFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    Ok(file.users)
}

fn write(path: &Path, users: Vec<UserRecord>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let text = toml::to_string_pretty(&UsersFile { users })?;
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

/// Loads the users. On first start (no file) creates Kylin's default `ADMIN` / `KYLIN`, unless
/// `default_admin` is false, in which case the file starts empty.
pub fn load_or_init(path: &Path, default_admin: bool) -> anyhow::Result<Vec<UserRecord>> {
    if !path.exists() {
        let mut users = Vec::new();
        if default_admin {
            users.push(UserRecord {
                name: "ADMIN".to_owned(),
                password_hash: hash(DEFAULT_PASSWORD)?,
                role: Role::Admin,
                projects: Vec::new(),
            });
        }
        write(path, users)?;
    }
    let users = read(path)?;
    warn_about(&users);
    Ok(users)
}

const DEFAULT_PASSWORD: &str = "KYLIN";

fn hash(password: &str) -> anyhow::Result<String> {
    hash_password(password).map_err(|e| anyhow::anyhow!("hashing the password failed: {e}"))
}

/// Logs what an operator must know about the users: none defined, or the default password.
fn warn_about(users: &[UserRecord]) {
    if users.is_empty() {
        warn!("no users are defined: nobody can log in; add one with `spool-server user add`");
    }
    for user in users {
        if user.name == "ADMIN" && verify_password(DEFAULT_PASSWORD, &user.password_hash) {
            warn!(
                "user ADMIN still has the default password; change it with `spool-server user passwd ADMIN`"
            );
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Re-reads the users file whenever it changes and hands the users to `auth`. A file that
/// cannot be read or parsed is logged and the users in force are kept.
pub async fn watch(path: PathBuf, auth: Arc<Authenticator>) {
    let mut seen = modified(&path);
    loop {
        tokio::time::sleep(RELOAD_EVERY).await;
        let now = modified(&path);
        if now == seen {
            continue;
        }
        seen = now;
        let file = path.clone();
        match tokio::task::spawn_blocking(move || read(&file)).await {
            Ok(Ok(users)) => {
                info!(count = users.len(), "users file changed; users reloaded");
                warn_about(&users);
                auth.replace(users);
            }
            Ok(Err(e)) => {
                error!(error = %format!("{e:#}"), "users file is invalid; keeping the users in force")
            }
            Err(e) => error!(error = %e, "reloading users failed"),
        }
    }
}

/// What `spool-server user ...` can do.
#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Adds a user; the password comes from SPOOL_PASSWORD or a prompt
    Add {
        /// The login name
        name: String,
        /// Make the user an admin (sees and manages every query and project)
        #[arg(long)]
        admin: bool,
        /// A project the user may query (repeatable; `*` for all)
        #[arg(long = "project")]
        projects: Vec<String>,
    },
    /// Changes a user's password; the password comes from SPOOL_PASSWORD or a prompt
    Passwd {
        /// The login name
        name: String,
    },
    /// Removes a user
    Remove {
        /// The login name
        name: String,
    },
    /// Lists the users, their roles and projects
    List,
}

fn password(name: &str) -> anyhow::Result<String> {
    let password = match std::env::var("SPOOL_PASSWORD") {
        Ok(p) => p,
        Err(_) => rpassword::prompt_password(format!("password for {name}: "))
            .context("reading the password (set SPOOL_PASSWORD when there is no terminal)")?,
    };
    if password.is_empty() {
        bail!("the password must not be empty");
    }
    Ok(password)
}

/// Runs a `user` subcommand against the users file in `data_dir`; returns what to print.
pub fn run(command: UserCommand, data_dir: &Path, default_admin: bool) -> anyhow::Result<String> {
    let path = path_in(data_dir);
    let mut users = if path.exists() {
        read(&path)?
    } else {
        std::fs::create_dir_all(data_dir)?;
        load_or_init(&path, default_admin)?
    };
    let position = |users: &[UserRecord], name: &str| users.iter().position(|u| u.name == name);
    let message = match command {
        UserCommand::Add {
            name,
            admin,
            projects,
        } => {
            if name.is_empty() || name.contains(':') || name.chars().any(char::is_control) {
                bail!("user name must be non-empty, without ':' or control characters");
            }
            if position(&users, &name).is_some() {
                bail!(
                    "user {name} already exists; use `spool-server user passwd {name}` to change the password"
                );
            }
            let role = if admin { Role::Admin } else { Role::User };
            users.push(UserRecord {
                name: name.clone(),
                password_hash: hash(&password(&name)?)?,
                role,
                projects,
            });
            format!("added user {name}")
        }
        UserCommand::Passwd { name } => {
            let i = position(&users, &name).with_context(|| format!("no user {name}"))?;
            users[i].password_hash = hash(&password(&name)?)?;
            format!("changed the password of {name}")
        }
        UserCommand::Remove { name } => {
            let i = position(&users, &name).with_context(|| format!("no user {name}"))?;
            users.remove(i);
            format!("removed user {name}")
        }
        UserCommand::List => {
            let lines: Vec<String> = users
                .iter()
                .map(|u| {
                    let role = match u.role {
                        Role::Admin => "admin",
                        Role::User => "user",
                    };
                    format!("{}\t{role}\t{}", u.name, u.projects.join(","))
                })
                .collect();
            return Ok(lines.join("\n"));
        }
    };
    write(&path, users)?;
    Ok(message)
}
