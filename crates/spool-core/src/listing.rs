//! Listing queries: a user's own (every user's for an admin), newest first, a page at a time.

use spool_domain::{Job, Principal, ProjectName, QueryId, Role, StateKind};
use spool_ports::{JobFilter, JobPosition};

use crate::{QueryStatus, ServiceError, Spool};

/// The page size when a listing names none.
pub const DEFAULT_PAGE: usize = 50;

/// The largest page a listing may ask for.
pub const MAX_PAGE: usize = 1_000;

/// What a listing asks for; every condition given must hold.
#[derive(Debug, Clone)]
pub struct ListRequest {
    /// Only queries of this project.
    pub project: Option<ProjectName>,
    /// Only queries in this kind of state.
    pub state: Option<StateKind>,
    /// At most this many queries (1 to [`MAX_PAGE`]).
    pub limit: usize,
    /// Only queries submitted before this one: the `next_before` of the previous page.
    pub before: Option<QueryId>,
}

impl Default for ListRequest {
    fn default() -> Self {
        Self {
            project: None,
            state: None,
            limit: DEFAULT_PAGE,
            before: None,
        }
    }
}

/// One listed query: its record and its status as the status call shows it.
#[derive(Debug, Clone)]
pub struct ListedQuery {
    /// The job record (owner, project, SQL).
    pub job: Job,
    /// Its status.
    pub status: QueryStatus,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct QueryPage {
    /// The queries, newest submission first.
    pub queries: Vec<ListedQuery>,
    /// Where the next page starts (pass it as `before`), when there may be one.
    pub next_before: Option<QueryId>,
}

impl Spool {
    /// Lists the queries `who` may see (their own; an admin's: everyone's), newest first.
    /// The job store evaluates the filter and the page; nothing else is read.
    pub async fn list_queries(
        &self,
        who: &Principal,
        request: &ListRequest,
    ) -> Result<QueryPage, ServiceError> {
        if request.limit == 0 || request.limit > MAX_PAGE {
            return Err(ServiceError::Unsupported(format!(
                "a page holds 1 to {MAX_PAGE} queries, not {}",
                request.limit
            )));
        }
        if let Some(project) = &request.project
            && !who.may_query(project.as_str())
        {
            return Err(ServiceError::Forbidden(format!(
                "user {} may not query project '{project}'",
                who.name
            )));
        }
        let before = match request.before {
            Some(id) => Some(JobPosition::of(&self.job(who, id).await?)),
            None => None,
        };
        let filter = JobFilter {
            project: request.project.clone(),
            owner: (who.role != Role::Admin).then(|| who.name.clone()),
            state: request.state,
            before,
            ..JobFilter::default()
        };
        let mut jobs = self
            .inner
            .ports
            .jobs
            .list_newest(&filter, request.limit + 1)
            .await?;
        let more = jobs.len() > request.limit;
        jobs.truncate(request.limit);
        let next_before = more.then(|| jobs.last().map(|j| j.id)).flatten();
        let mut queries = Vec::with_capacity(jobs.len());
        for job in jobs {
            // A user whose grant on a project was revoked no longer sees its queries there.
            if !who.may_query(job.request.project.as_str()) {
                continue;
            }
            let (status, info) = job.public_status();
            let detail = Some(self.detail(&job).await?);
            queries.push(ListedQuery {
                status: QueryStatus {
                    id: job.id,
                    status,
                    info,
                    detail,
                    expired_at: None,
                },
                job,
            });
        }
        Ok(QueryPage {
            queries,
            next_before,
        })
    }
}
