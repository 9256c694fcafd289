//! A PostgreSQL server of a test's own, for tests that stop or restart the server: a fresh
//! temporary folder, its own port; stopped and deleted on drop. The shared server is never
//! touched.

use tierflow_pg::Server;

/// A private server in a temporary folder.
pub struct PrivatePostgres {
    server: Option<Server>,
    dir: std::path::PathBuf,
}

impl PrivatePostgres {
    /// Initializes and starts a server; panics with the reason if it cannot.
    pub fn start() -> PrivatePostgres {
        let dir =
            std::env::temp_dir().join(format!("tierflow-pg-{}", uuid::Uuid::new_v4().simple()));
        let server = Server::start(&dir).unwrap_or_else(|e| panic!("private PostgreSQL: {e}"));
        PrivatePostgres {
            server: Some(server),
            dir,
        }
    }

    /// URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        self.server().url(db)
    }

    /// Restarts the server (fast shutdown: sessions are cut, as in a failover).
    pub fn restart(&self) {
        self.server()
            .restart()
            .unwrap_or_else(|e| panic!("restart: {e}"));
    }

    fn server(&self) -> &Server {
        self.server
            .as_ref()
            .unwrap_or_else(|| unreachable!("present until drop"))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        drop(self.server.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
