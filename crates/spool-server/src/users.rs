//! Users: the `user` subcommands and the watcher that hands changes to a running server,
//! over a [`UserStore`]: PostgreSQL when the job store is (every process sees the same users),
//! else the users file `<data dir>/users.toml` (argon2 hashes, never passwords), re-read
//! whenever it changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use spool_domain::{Role, UserRecord};
use spool_http::{Authenticator, hash_password, verify_password};
use spool_ports::{UserStore, UserStoreError};
use tracing::{error, info, warn};

/// How often the file store checks the users file for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Serialize, Deserialize)]
struct UsersFile {
    #[serde(default, rename = "user")]
    users: Vec<UserRecord>,
}

/// The users in a TOML file, for one machine (the embedded default).
#[derive(Debug, Clone)]
pub struct FileUserStore {
    path: PathBuf,
}

impl FileUserStore {
    /// The store in `<data_dir>/users.toml`.
    pub fn in_dir(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join("users.toml"),
        }
    }

    fn read(&self) -> Result<Vec<UserRecord>, UserStoreError> {
        let text = std::fs::read_to_string(&self.path).map_err(|e| file_error(&self.path, e))?;
        let file: UsersFile = toml::from_str(&text).map_err(|e| file_error(&self.path, e))?;
        for user in &file.users {
            spool_domain::check_format(
                || format!("user {}", user.name),
                user.format,
                spool_domain::USER_FORMAT,
            )
            .map_err(|e| file_error(&self.path, e))?;
        }
        Ok(file.users)
    }

    fn write(&self, users: Vec<UserRecord>) -> Result<(), UserStoreError> {
        let fail = |e: std::io::Error| file_error(&self.path, e);
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(fail)?;
        }
        let text =
            toml::to_string_pretty(&UsersFile { users }).map_err(|e| file_error(&self.path, e))?;
        let tmp = self.path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).map_err(fail)?;
        std::fs::rename(&tmp, &self.path).map_err(fail)?;
        Ok(())
    }

    /// Reads, changes and writes the file, off the async reactor.
    async fn edit(
        &self,
        change: impl FnOnce(&mut Vec<UserRecord>) -> Result<(), UserStoreError> + Send + 'static,
    ) -> Result<(), UserStoreError> {
        self.blocking(move |store| {
            let mut users = store.read()?;
            change(&mut users)?;
            store.write(users)
        })
        .await
    }

    /// Runs file work on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Self) -> Result<T, UserStoreError> + Send + 'static,
    ) -> Result<T, UserStoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| UserStoreError::Backend(Box::new(e)))?
    }
}

/// A users file that cannot be read or written, with its path.
#[derive(Debug, thiserror::Error)]
#[error("users file {path}: {message}")]
struct FileError {
    path: String,
    message: String,
}

fn file_error(path: &Path, e: impl std::fmt::Display) -> UserStoreError {
    UserStoreError::Backend(Box::new(FileError {
        path: path.display().to_string(),
        message: e.to_string(),
    }))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[async_trait]
impl UserStore for FileUserStore {
    async fn list(&self) -> Result<Vec<UserRecord>, UserStoreError> {
        self.blocking(|store| {
            if !store.path.exists() {
                return Ok(Vec::new());
            }
            store.read()
        })
        .await
    }

    async fn initialize(&self, first: Vec<UserRecord>) -> Result<bool, UserStoreError> {
        self.blocking(move |store| {
            if store.path.exists() {
                return Ok(false);
            }
            store.write(first)?;
            Ok(true)
        })
        .await
    }

    async fn add(&self, user: UserRecord) -> Result<(), UserStoreError> {
        self.edit(|users| {
            if users.iter().any(|u| u.name == user.name) {
                return Err(UserStoreError::Exists(user.name.clone()));
            }
            users.push(user);
            Ok(())
        })
        .await
    }

    async fn replace(&self, user: UserRecord) -> Result<(), UserStoreError> {
        self.edit(|users| {
            let slot = users
                .iter_mut()
                .find(|u| u.name == user.name)
                .ok_or_else(|| UserStoreError::NotFound(user.name.clone()))?;
            *slot = user;
            Ok(())
        })
        .await
    }

    async fn remove(&self, name: &str) -> Result<(), UserStoreError> {
        let name = name.to_owned();
        self.edit(move |users| {
            let before = users.len();
            users.retain(|u| u.name != name);
            if users.len() == before {
                return Err(UserStoreError::NotFound(name));
            }
            Ok(())
        })
        .await
    }

    fn changes(&self) -> BoxStream<'static, ()> {
        let path = self.path.clone();
        let seen = modified(&path);
        futures::stream::unfold((path, seen), |(path, mut seen)| async move {
            loop {
                tokio::time::sleep(RELOAD_EVERY).await;
                let now = modified(&path);
                if now != seen {
                    seen = now;
                    return Some(((), (path, seen)));
                }
            }
        })
        .boxed()
    }
}

const DEFAULT_PASSWORD: &str = "KYLIN";

fn hash(password: &str) -> anyhow::Result<String> {
    hash_password(password).map_err(|e| anyhow::anyhow!("hashing the password failed: {e}"))
}

/// Loads the users. On the store's first use creates Kylin's default `ADMIN` / `KYLIN`, unless
/// `default_admin` is false, in which case it starts empty.
pub async fn load_or_init(
    store: &dyn UserStore,
    default_admin: bool,
) -> anyhow::Result<Vec<UserRecord>> {
    let mut first = Vec::new();
    if default_admin {
        first.push(UserRecord {
            name: "ADMIN".to_owned(),
            password_hash: hash(DEFAULT_PASSWORD)?,
            role: Role::Admin,
            projects: Vec::new(),
            format: spool_domain::USER_FORMAT,
        });
    }
    if store
        .initialize(first)
        .await
        .context("creating the first users")?
    {
        info!("user store initialized");
    }
    let users = store.list().await.context("reading the users")?;
    warn_about(&users);
    Ok(users)
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

/// Hands the users to `auth` whenever the store announces a change. A store that cannot be
/// read is logged and the users in force are kept.
pub async fn watch(store: Arc<dyn UserStore>, auth: Arc<Authenticator>) {
    let mut changes = store.changes();
    while changes.next().await.is_some() {
        match store.list().await {
            Ok(users) => {
                info!(count = users.len(), "users changed; users reloaded");
                warn_about(&users);
                auth.replace(users);
            }
            Err(e) => {
                error!(error = %e, source = ?std::error::Error::source(&e), "reading the users failed; keeping the users in force")
            }
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

/// Runs a `user` subcommand against `store`; returns what to print.
pub async fn run(
    command: UserCommand,
    store: &dyn UserStore,
    default_admin: bool,
) -> anyhow::Result<String> {
    let users = load_or_init(store, default_admin).await?;
    let message = match command {
        UserCommand::Add {
            name,
            admin,
            projects,
        } => {
            if name.is_empty() || name.contains(':') || name.chars().any(char::is_control) {
                bail!("user name must be non-empty, without ':' or control characters");
            }
            if users.iter().any(|u| u.name == name) {
                bail!(
                    "user {name} already exists; use `spool-server user passwd {name}` to change the password"
                );
            }
            let role = if admin { Role::Admin } else { Role::User };
            store
                .add(UserRecord {
                    name: name.clone(),
                    password_hash: hash(&password(&name)?)?,
                    role,
                    projects,
                    format: spool_domain::USER_FORMAT,
                })
                .await?;
            format!("added user {name}")
        }
        UserCommand::Passwd { name } => {
            let mut user = users
                .into_iter()
                .find(|u| u.name == name)
                .with_context(|| format!("no user {name}"))?;
            user.password_hash = hash(&password(&name)?)?;
            store.replace(user).await?;
            format!("changed the password of {name}")
        }
        UserCommand::Remove { name } => {
            match store.remove(&name).await {
                Err(UserStoreError::NotFound(_)) => bail!("no user {name}"),
                other => other?,
            }
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
            lines.join("\n")
        }
    };
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_users_file_keeps_the_user_store_contract() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FileUserStore::in_dir(dir.path());
        spool_ports::testing::user_store_contract(&store, &store.clone()).await;
    }
}
