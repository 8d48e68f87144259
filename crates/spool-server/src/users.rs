//! The users file: `<data dir>/users.toml`, holding argon2 hashes, never passwords.

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use spool_domain::Role;
use spool_http::{UserRecord, hash_password};
use tracing::warn;

#[derive(Debug, Default, Serialize, Deserialize)]
struct UsersFile {
    #[serde(default, rename = "user")]
    users: Vec<UserRecord>,
}

/// Loads the users, creating the file with Kylin's default `ADMIN` / `KYLIN` on first start.
pub fn load_or_init(path: &Path) -> anyhow::Result<Vec<UserRecord>> {
    if !path.exists() {
        let admin = UserRecord {
            name: "ADMIN".to_owned(),
            password_hash: hash_password("KYLIN")
                .map_err(|e| anyhow::anyhow!("hashing the default password failed: {e}"))?,
            role: Role::Admin,
            projects: Vec::new(),
        };
        let file = UsersFile { users: vec![admin] };
        let text = toml::to_string_pretty(&file)?;
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)?;
        warn!(
            file = %path.display(),
            "created the default user ADMIN with password KYLIN; change it before exposing the server"
        );
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: UsersFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    anyhow::ensure!(!file.users.is_empty(), "{} defines no user", path.display());
    Ok(file.users)
}
