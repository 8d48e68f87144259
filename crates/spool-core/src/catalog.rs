//! What a user may learn about the data: the projects they may query and their tables.

use spool_domain::{Principal, ProjectName};
use spool_ports::{EngineError, TableInfo};

use crate::{ServiceError, Spool};

impl Spool {
    /// The projects `who` may query, sorted by name (every project for an admin).
    pub async fn projects(&self, who: &Principal) -> Result<Vec<String>, ServiceError> {
        let all = self
            .inner
            .ports
            .catalog
            .projects()
            .await
            .map_err(|e| ServiceError::Internal(Box::new(e)))?;
        Ok(all.into_iter().filter(|p| who.may_query(p)).collect())
    }

    /// The tables and views of `project`, with their columns, for a user who may query it.
    pub async fn describe(
        &self,
        who: &Principal,
        project: &ProjectName,
    ) -> Result<Vec<TableInfo>, ServiceError> {
        if !who.may_query(project.as_str()) {
            return Err(ServiceError::Forbidden(format!(
                "user {} may not query project '{project}'",
                who.name
            )));
        }
        match self.inner.ports.catalog.describe(project).await {
            Ok(tables) => Ok(tables),
            Err(EngineError::ProjectNotFound(name)) => {
                Err(ServiceError::ProjectNotFound(name.to_string()))
            }
            Err(e) => Err(ServiceError::Internal(Box::new(e))),
        }
    }
}
