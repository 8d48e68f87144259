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

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The user name, as configured.
    pub name: String,
    /// What the user may do.
    pub role: Role,
}

impl Principal {
    /// Returns whether this principal may see a query owned by `owner`.
    pub fn can_see(&self, owner: &str) -> bool {
        self.role == Role::Admin || self.name == owner
    }
}
