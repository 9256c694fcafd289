//! The queue's schema: apalis-postgres's migrations, applied as they ship.

use sqlx::migrate::Migrator;

/// apalis-postgres's migrator (schema `apalis`, history in `apalis._sqlx_migrations`).
pub fn apalis_migrator() -> Migrator {
    apalis_postgres::PostgresStorage::<()>::migrations()
}
