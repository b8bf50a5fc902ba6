//! `router token ...`: token records managed at runtime, in Redis.

use crate::config::{TokenCommand, TokenFields};
use polysocket_common::cli::{EXIT_DATA, EXIT_UNAVAILABLE};
use polysocket_common::fleet::{Fleet, FleetError};
use polysocket_common::token::{TargetRule, TokenRecord};
use polysocket_common::wire::Secret;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("token {0:?} already exists (use `token update`)")]
    Exists(String),
    #[error("no token {0:?}")]
    Missing(String),
    #[error("invalid token record: {0}")]
    Invalid(String),
    #[error(transparent)]
    Fleet(#[from] FleetError),
}

impl AdminError {
    pub fn exit_code(&self) -> i32 {
        match self {
            AdminError::Exists(_) | AdminError::Missing(_) | AdminError::Invalid(_) => EXIT_DATA,
            AdminError::Fleet(_) => EXIT_UNAVAILABLE,
        }
    }
}

/// Carries out one token command; what it prints goes to `out`.
pub async fn run(fleet: &dyn Fleet, command: TokenCommand, out: &mut dyn std::io::Write) -> Result<(), AdminError> {
    match command {
        TokenCommand::Add(fields) => {
            let record = record_of(fields)?;
            if fleet.token(&record.token).await?.is_some() {
                return Err(AdminError::Exists(record.token));
            }
            store(fleet, record, out).await
        }
        TokenCommand::Update(fields) => {
            let record = record_of(fields)?;
            if fleet.token(&record.token).await?.is_none() {
                return Err(AdminError::Missing(record.token));
            }
            store(fleet, record, out).await
        }
        TokenCommand::List => {
            for record in fleet.tokens().await? {
                let _ = writeln!(out, "{}", serde_json::to_string(&record).expect("records serialize"));
            }
            Ok(())
        }
        TokenCommand::Revoke { token, close_sockets } => {
            if !fleet.revoke_token(&token, close_sockets).await? {
                return Err(AdminError::Missing(token));
            }
            let closing = if close_sockets { "; its sockets are being closed" } else { "" };
            let _ = writeln!(out, "revoked {token}{closing}");
            Ok(())
        }
    }
}

fn record_of(fields: TokenFields) -> Result<TokenRecord, AdminError> {
    let granting = !fields.allow_private.is_empty() || !fields.upstream_headers.is_empty();
    if granting && fields.targets.len() != 1 {
        return Err(AdminError::Invalid(
            "--allow-private and --upstream-header grant to one target pattern: give exactly one --targets \
             (a token whose patterns grant different things is written in the tokens file)"
                .into(),
        ));
    }
    let headers: BTreeMap<String, Secret> =
        fields.upstream_headers.into_iter().map(|(name, value)| (name, Secret(value))).collect();
    let mut grants = Some((fields.allow_private, headers));
    let targets = fields
        .targets
        .into_iter()
        .map(|pattern| {
            let (allow_private, headers) = grants.take().unwrap_or_default();
            TargetRule::new(pattern, allow_private, headers)
        })
        .collect();
    let record = TokenRecord {
        token: fields.token,
        targets,
        origins: fields.origins,
        max_connections: fields.max_connections,
        label: fields.label,
        forward_bearer: fields.forward_bearer,
    };
    record.validate().map_err(AdminError::Invalid)?;
    Ok(record)
}

async fn store(fleet: &dyn Fleet, record: TokenRecord, out: &mut dyn std::io::Write) -> Result<(), AdminError> {
    fleet.store_tokens(std::slice::from_ref(&record)).await?;
    let _ = writeln!(out, "{}", serde_json::to_string(&record).expect("records serialize"));
    Ok(())
}
