//! Who is asking: the authenticated principal and its role.

use serde::{Deserialize, Serialize};

/// A user's role. Admins see and manage every query; users only their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May see, download and delete every query, and clean up all of them.
    Admin,
    /// May see, download and delete only the queries they submitted.
    User,
}

/// A user as configured: name, argon2 PHC hash string, role, grants. What user stores keep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    /// The login name, matched exactly.
    pub name: String,
    /// The argon2 hash in PHC string form (`$argon2id$...`).
    pub password_hash: String,
    /// What the user may do.
    pub role: Role,
    /// Projects the user may query (`*`: all); ignored for admins.
    #[serde(default)]
    pub projects: Vec<String>,
    /// The record's format ([`crate::USER_FORMAT`] when this release wrote it; 1 for records
    /// from before formats were kept).
    #[serde(default = "crate::format::first")]
    pub format: u32,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user name, as configured.
    pub name: String,
    /// What the user may do.
    pub role: Role,
    /// Projects a user may query (matched ignoring ASCII case; `*` grants all). Admins may
    /// query every project whatever this says.
    pub projects: Vec<String>,
}

impl Principal {
    /// Returns an admin, who may query every project.
    pub fn admin(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            role: Role::Admin,
            projects: Vec::new(),
        }
    }

    /// Returns a user granted `projects`.
    pub fn user(name: &str, projects: &[&str]) -> Self {
        Self {
            name: name.to_owned(),
            role: Role::User,
            projects: projects.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    /// Returns whether this principal may submit queries to `project`.
    pub fn may_query(&self, project: &str) -> bool {
        self.role == Role::Admin
            || self
                .projects
                .iter()
                .any(|p| p == "*" || p.eq_ignore_ascii_case(project))
    }

    /// Returns whether this principal may see a query owned by `owner`.
    pub fn can_see(&self, owner: &str) -> bool {
        self.role == Role::Admin || self.name == owner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_decide_which_projects_a_user_may_query() {
        let bob = Principal::user("bob", &["ssb"]);
        assert!(bob.may_query("ssb") && bob.may_query("SSB"));
        assert!(!bob.may_query("DEFAULT"));
        assert!(Principal::user("eve", &["*"]).may_query("anything"));
        assert!(!Principal::user("nobody", &[]).may_query("ssb"));
        assert!(Principal::admin("ADMIN").may_query("anything"));
    }

    #[test]
    fn users_see_only_their_own_queries_and_admins_see_all() {
        assert!(Principal::user("bob", &[]).can_see("bob"));
        assert!(!Principal::user("bob", &[]).can_see("alice"));
        assert!(Principal::admin("ADMIN").can_see("alice"));
    }
}
