//! HTTP Basic authentication against argon2 password hashes.
//!
//! Verifying an argon2 hash costs tens of milliseconds by design, too much for every status
//! poll. A successful verification is remembered for [`CACHE_TTL`] as a keyed SHA-256 digest of
//! the password (the key is random per process), so a poll costs one hash, and the cache never
//! holds a password or anything that can be checked offline without the key.
//!
//! Invariants: a failed login costs the same work whether or not the user exists (an unknown
//! user is checked against a dummy hash); passwords and hashes are never logged.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::HeaderValue;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use spool_domain::{Principal, UserRecord};

use crate::ApiError;

/// How long a verified password is trusted without running argon2 again.
const CACHE_TTL: Duration = Duration::from_secs(300);
/// Failed logins for one user name from one client address within [`FAILURE_WINDOW`] before
/// that pair is refused. Other users behind the same address (a proxy, a NAT) are not.
const MAX_FAILURES: u32 = 10;
/// Failed logins from one client address, whatever the user names, before the address is
/// refused (so guessing across many user names is slowed down too).
const MAX_FAILURES_PER_ADDRESS: u32 = 100;
/// The window in which failures are counted, and how long a client is then refused.
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Clients tracked at most; beyond it, stale entries are dropped first, and while it is still
/// full new clients are not tracked (the map stays bounded under a flood from many addresses;
/// the cap on password checks below bounds the CPU such a flood costs).
const MAX_TRACKED_CLIENTS: usize = 10_000;
/// Password checks (argon2, about 19 MiB and tens of milliseconds each) running at once per
/// core; a login that cannot start one within [`CHECK_WAIT`] is answered 429.
const CHECKS_PER_CORE: usize = 2;
/// How long a login waits for a password check to be free before it is refused.
const CHECK_WAIT: Duration = Duration::from_secs(2);

/// Failed logins of one client address.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    since: Instant,
    blocked_until: Option<Instant>,
}

fn principal(user: &UserRecord) -> Principal {
    Principal {
        name: user.name.clone(),
        role: user.role,
        projects: user.projects.clone(),
    }
}

/// Hashes `password` with argon2id and a random salt, in PHC string form.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Returns whether `password` matches the argon2 PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Checks Basic credentials against the configured users.
pub struct Authenticator {
    users: RwLock<Arc<HashMap<String, UserRecord>>>,
    verified: Mutex<HashMap<String, ([u8; 32], Instant)>>,
    /// Keyed by client address and user name; the empty name counts the whole address.
    failures: Mutex<HashMap<(IpAddr, String), Failures>>,
    key: [u8; 32],
    dummy_hash: String,
    /// Permits for password checks running at once.
    checks: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds an authenticator for `users`.
    pub fn new(users: Vec<UserRecord>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self::with_check_limit(users, cores * CHECKS_PER_CORE)
    }

    /// Builds an authenticator for `users` that runs at most `checks` password checks at once.
    pub fn with_check_limit(users: Vec<UserRecord>, checks: usize) -> Self {
        let dummy_hash = hash_password("spool-dummy-password").unwrap_or_default();
        let auth = Self {
            users: RwLock::new(Arc::new(HashMap::new())),
            verified: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            key: rand::random(),
            dummy_hash,
            checks: Arc::new(tokio::sync::Semaphore::new(checks.max(1))),
        };
        auth.replace(users);
        auth
    }

    /// Replaces the user list (for example after the users file changed); forgets every
    /// cached verification, so removed users and changed passwords take effect at once.
    pub fn replace(&self, users: Vec<UserRecord>) {
        let map = users.into_iter().map(|u| (u.name.clone(), u)).collect();
        *self.users.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(map);
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(user.as_bytes());
        h.update([0u8]);
        h.update(password.as_bytes());
        h.finalize().into()
    }

    /// Returns how long `user` from `client` is still refused, if it is.
    fn blocked_for(&self, client: IpAddr, user: &str) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        [(client, user.to_owned()), (client, String::new())]
            .iter()
            .filter_map(|key| {
                failures
                    .get(key)?
                    .blocked_until?
                    .checked_duration_since(now)
            })
            .max()
    }

    /// Counts a failed login of `user` from `client`; refuses the pair (or the whole address)
    /// for a while after too many.
    fn record_failure(&self, client: IpAddr, user: &str) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= MAX_TRACKED_CLIENTS {
            failures.retain(|_, f| now.duration_since(f.since) < FAILURE_WINDOW);
        }
        let mut keys = vec![((client, String::new()), MAX_FAILURES_PER_ADDRESS)];
        if !user.is_empty() {
            keys.push(((client, user.to_owned()), MAX_FAILURES));
        }
        for (key, limit) in keys {
            if failures.len() >= MAX_TRACKED_CLIENTS && !failures.contains_key(&key) {
                continue;
            }
            let entry = failures.entry(key).or_insert(Failures {
                count: 0,
                since: now,
                blocked_until: None,
            });
            if now.duration_since(entry.since) >= FAILURE_WINDOW {
                *entry = Failures {
                    count: 0,
                    since: now,
                    blocked_until: None,
                };
            }
            entry.count += 1;
            if entry.count >= limit && entry.blocked_until.is_none() {
                entry.blocked_until = Some(now + FAILURE_WINDOW);
                tracing::warn!(%client, failures = entry.count, "too many failed logins; refusing for a while");
            }
        }
    }

    /// Returns the principal named by a `Basic` Authorization header sent from `client`, or
    /// why not. A client with too many recent failures is refused without checking.
    pub async fn authenticate(
        &self,
        header: Option<&HeaderValue>,
        client: Option<IpAddr>,
    ) -> Result<Principal, ApiError> {
        let user = parse_basic(header)
            .map(|(user, _)| user)
            .unwrap_or_default();
        if let Some(wait) = client.and_then(|c| self.blocked_for(c, &user)) {
            return Err(ApiError::TooManyAttempts(wait.as_secs().max(1)));
        }
        let result = self.check(header).await;
        // A request without credentials at all is a client asking what to send, not a guess.
        if let (Err(ApiError::Unauthorized(_)), Some(client), Some(_)) = (&result, client, header) {
            self.record_failure(client, &user);
        }
        result
    }

    async fn check(&self, header: Option<&HeaderValue>) -> Result<Principal, ApiError> {
        let (user, password) = parse_basic(header)?;
        let record = self
            .users
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&user)
            .cloned();
        let digest = self.digest(&user, &password);
        if let Some(record) = &record {
            let cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((known, at)) = cache.get(&user)
                && *known == digest
                && at.elapsed() < CACHE_TTL
            {
                return Ok(principal(record));
            }
        }
        let hash = record
            .as_ref()
            .map_or_else(|| self.dummy_hash.clone(), |r| r.password_hash.clone());
        // A flood of guesses cannot take every core and gigabytes of argon2 memory: checks run
        // at most `checks` at once; a login that waits longer than CHECK_WAIT for its turn is
        // refused (a burst of first logins waits; logins already verified skip argon2 above).
        let permit = tokio::time::timeout(CHECK_WAIT, Arc::clone(&self.checks).acquire_owned());
        let Ok(Ok(permit)) = permit.await else {
            return Err(ApiError::LoginsBusy);
        };
        let valid = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            verify_password(&password, &hash)
        })
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
        match record {
            Some(record) if valid => {
                self.verified
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(user, (digest, Instant::now()));
                Ok(principal(&record))
            }
            _ => Err(ApiError::Unauthorized("invalid user name or password")),
        }
    }
}

fn parse_basic(header: Option<&HeaderValue>) -> Result<(String, String), ApiError> {
    let header = header.ok_or(ApiError::Unauthorized(
        "authentication required: send HTTP Basic credentials",
    ))?;
    let malformed =
        ApiError::Unauthorized("malformed Authorization header: expected Basic credentials");
    let text = header
        .to_str()
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header"))?;
    let (scheme, encoded) = text.trim().split_once(' ').ok_or(ApiError::Unauthorized(
        "malformed Authorization header: expected Basic credentials",
    ))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(malformed);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header: invalid base64"))?;
    let decoded = String::from_utf8(decoded)
        .map_err(|_| ApiError::Unauthorized("malformed Authorization header: not UTF-8"))?;
    let (user, password) = decoded.split_once(':').ok_or(ApiError::Unauthorized(
        "malformed Authorization header: expected user:password",
    ))?;
    Ok((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use spool_domain::Role;

    fn auth() -> Authenticator {
        Authenticator::new(vec![UserRecord {
            name: "ADMIN".into(),
            password_hash: hash_password("KYLIN").expect("hash"),
            role: Role::Admin,
            projects: vec![],
            format: spool_domain::USER_FORMAT,
        }])
    }

    fn header(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).expect("header")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_flood_of_guesses_is_refused_beyond_the_check_cap_and_known_logins_still_work() {
        let a = Arc::new(Authenticator::with_check_limit(
            vec![UserRecord {
                name: "ADMIN".into(),
                password_hash: hash_password("KYLIN").expect("hash"),
                role: Role::Admin,
                projects: vec![],
                format: spool_domain::USER_FORMAT,
            }],
            1,
        ));
        // ADMIN logged in once: verified and cached.
        let good = header("Basic QURNSU46S1lMSU4=");
        a.authenticate(Some(&good), None).await.expect("valid");
        let guess = |i: u32| {
            let a = Arc::clone(&a);
            async move {
                use base64::Engine;
                let text =
                    base64::engine::general_purpose::STANDARD.encode(format!("ADMIN:guess-{i}"));
                a.authenticate(Some(&header(&format!("Basic {text}"))), None)
                    .await
            }
        };
        // Every check is taken (as by a flood): guesses wait their turn, then are refused.
        let taken = Arc::clone(&a.checks)
            .try_acquire_owned()
            .expect("the only permit");
        let waited = std::time::Instant::now();
        let refused = futures::future::join_all((0..3).map(guess)).await;
        assert!(
            refused
                .iter()
                .all(|r| matches!(r, Err(ApiError::LoginsBusy))),
            "{refused:?}"
        );
        assert!(
            waited.elapsed() >= CHECK_WAIT,
            "they waited for a turn first"
        );
        // The cached login never waits for a check.
        a.authenticate(Some(&good), None)
            .await
            .expect("still valid");
        drop(taken);
        assert!(matches!(guess(99).await, Err(ApiError::Unauthorized(_))));
    }

    #[test]
    fn failures_from_a_flood_of_addresses_stay_bounded() {
        let a = auth();
        for i in 0..(MAX_TRACKED_CLIENTS as u32 + 5_000) {
            let client = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            a.record_failure(client, "ADMIN");
        }
        let tracked = a.failures.lock().expect("lock").len();
        assert!(tracked <= MAX_TRACKED_CLIENTS, "{tracked} entries");
    }

    #[tokio::test]
    async fn the_seeds_credentials_work() {
        let a = auth();
        let p = a
            .authenticate(Some(&header("Basic QURNSU46S1lMSU4=")), None)
            .await
            .expect("valid");
        assert_eq!(p, Principal::admin("ADMIN"));
        // Cached the second time, same answer.
        let again = a
            .authenticate(Some(&header("basic QURNSU46S1lMSU4=")), None)
            .await
            .expect("valid");
        assert_eq!(again.name, "ADMIN");
    }

    #[tokio::test]
    async fn wrong_missing_or_malformed_credentials_are_refused() {
        let a = auth();
        let basic = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        for h in [
            Some(header(&basic("ADMIN:kylin"))),
            Some(header(&basic("admin:KYLIN"))),
            Some(header(&basic("NOBODY:KYLIN"))),
            Some(header(&basic("ADMINKYLIN"))),
            Some(header("Bearer QURNSU46S1lMSU4=")),
            Some(header("Basic !!!")),
            None,
        ] {
            assert!(
                matches!(
                    a.authenticate(h.as_ref(), None).await,
                    Err(ApiError::Unauthorized(_))
                ),
                "{h:?}"
            );
        }
    }

    #[tokio::test]
    async fn replacing_users_revokes_cached_logins() {
        let a = auth();
        a.authenticate(Some(&header("Basic QURNSU46S1lMSU4=")), None)
            .await
            .expect("valid");
        a.replace(vec![]);
        assert!(
            a.authenticate(Some(&header("Basic QURNSU46S1lMSU4=")), None)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_client_with_too_many_failures_is_refused_for_a_while() {
        let a = auth();
        let client: IpAddr = "127.0.0.9".parse().expect("ip");
        let wrong = header("Basic QURNSU46d3Jvbmc=");
        for _ in 0..MAX_FAILURES {
            assert!(matches!(
                a.authenticate(Some(&wrong), Some(client)).await,
                Err(ApiError::Unauthorized(_))
            ));
        }
        // Now even the right password is refused, with a hint when to retry.
        let right = header("Basic QURNSU46S1lMSU4=");
        assert!(matches!(
            a.authenticate(Some(&right), Some(client)).await,
            Err(ApiError::TooManyAttempts(s)) if (1..=60).contains(&s)
        ));
        // Other clients are not affected, nor other users of the same client.
        let other: IpAddr = "127.0.0.10".parse().expect("ip");
        assert!(a.authenticate(Some(&right), Some(other)).await.is_ok());
        let bob = header("Basic Ym9iOmJvYg==");
        assert!(matches!(
            a.authenticate(Some(&bob), Some(client)).await,
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[tokio::test]
    async fn guessing_across_user_names_blocks_the_whole_address() {
        let a = auth();
        let client: IpAddr = "127.0.0.11".parse().expect("ip");
        for i in 0..MAX_FAILURES_PER_ADDRESS {
            let credentials = base64::engine::general_purpose::STANDARD.encode(format!("u{i}:x"));
            let _ = a
                .authenticate(Some(&header(&format!("Basic {credentials}"))), Some(client))
                .await;
        }
        let right = header("Basic QURNSU46S1lMSU4=");
        assert!(matches!(
            a.authenticate(Some(&right), Some(client)).await,
            Err(ApiError::TooManyAttempts(_))
        ));
    }
}
