//! The user store port: the accounts every process of a service authenticates against.

use async_trait::async_trait;
use futures::stream::BoxStream;
use spool_domain::UserRecord;

/// What can go wrong in a user store.
#[derive(Debug, thiserror::Error)]
pub enum UserStoreError {
    /// A user with this name already exists.
    #[error("user {0} already exists")]
    Exists(String),
    /// No user has this name.
    #[error("no user {0}")]
    NotFound(String),
    /// The backend failed; the operation may or may not have taken effect.
    #[error("user store failure")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Durable storage of users, shared by every process of a service.
///
/// Contract:
/// - Each change is atomic and durable when the call returns `Ok`.
/// - [`UserStore::changes`] yields soon (within seconds) after any change, made by this
///   process or another; subscribers then re-read [`UserStore::list`].
/// - [`UserStore::initialize`] stores the first users exactly once in the store's life, even
///   when several processes start at once; a store whose users were all removed stays empty.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Returns every user, by name.
    async fn list(&self) -> Result<Vec<UserRecord>, UserStoreError>;

    /// On a store that was never initialized, stores `first` and returns true; otherwise
    /// changes nothing and returns false.
    async fn initialize(&self, first: Vec<UserRecord>) -> Result<bool, UserStoreError>;

    /// Adds a user; `Exists` if the name is taken.
    async fn add(&self, user: UserRecord) -> Result<(), UserStoreError>;

    /// Replaces the user of the same name; `NotFound` if there is none.
    async fn replace(&self, user: UserRecord) -> Result<(), UserStoreError>;

    /// Removes a user; `NotFound` if there is none.
    async fn remove(&self, name: &str) -> Result<(), UserStoreError>;

    /// Yields after each change to the users, from now on.
    fn changes(&self) -> BoxStream<'static, ()>;
}
