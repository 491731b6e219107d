//! A server that verifies HS256 tokens signed with [`SECRET`] and applies the example
//! rules (`schema/access.rules`), and tokens for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sluice::auth::{Claims, JwtAuthenticator};
use sluice::client::ConnectionError;
use sluice::ids::SyncId;
use sluice::server::{Quotas, Server, ServerHandle};
use sluice::store::Mutation;

use super::{schema_dir, write_committed, Client};

/// The signing secret of every test server with authentication.
pub const SECRET: &str = "sluice-test-secret";

pub fn rules_file() -> PathBuf {
    schema_dir().join("access.rules")
}

/// A server on 127.0.0.1:0 with its database in `dir`, tokens and the example rules.
pub async fn start_with_rules(dir: &Path) -> ServerHandle {
    start_with_rules_and(dir, Quotas::default()).await
}

/// [`start_with_rules`] with these quotas.
pub async fn start_with_rules_and(dir: &Path, quotas: Quotas) -> ServerHandle {
    Server::builder(schema_dir(), dir.join("app.db"))
        .listen("127.0.0.1:0".parse().unwrap())
        .authenticator(Arc::new(JwtAuthenticator::new(SECRET)))
        .rules_file(rules_file())
        .quotas(quotas)
        .start()
        .await
        .unwrap()
}

/// A token for `user` with a `teams` claim.
pub fn token(user: &str, teams: &[&str]) -> String {
    let claims = Claims::for_user(user)
        .with("teams", serde_json::json!(teams))
        .unwrap();
    JwtAuthenticator::new(SECRET).sign(&claims)
}

/// [`start_with_rules`] in a temporary folder of its own.
pub struct AuthServer {
    pub dir: tempfile::TempDir,
    pub handle: ServerHandle,
}

impl AuthServer {
    pub async fn start() -> AuthServer {
        AuthServer::with_quotas(Quotas::default()).await
    }

    /// A server with tokens, the example rules and these quotas.
    pub async fn with_quotas(quotas: Quotas) -> AuthServer {
        let dir = tempfile::tempdir().unwrap();
        let handle = start_with_rules_and(dir.path(), quotas).await;
        AuthServer { dir, handle }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("app.db")
    }

    /// A protocol client presenting `token`; the handshake's refusal is returned.
    pub async fn connect(
        &self,
        id: &str,
        token: Option<String>,
    ) -> Result<Client, ConnectionError> {
        let ca = self.handle.cert_path().unwrap().to_path_buf();
        Client::connect_with(self.handle.local_addr(), &ca, id, token).await
    }

    /// A backend write; panics unless committed.
    pub async fn write(&self, mutations: Vec<Mutation>) -> SyncId {
        write_committed(&self.handle, mutations).await
    }
}
