//! `tierflow webhooks list|create|update|disable|enable|rotate-secret|new-secret`: the endpoints that
//! `entitlement.changed` events are delivered to, each with its own Standard Webhooks secret (the
//! same operations as the admin API's `/v1/webhook-endpoints`). A secret is printed once, by the
//! command that made it. A dead delivery is re-delivered with `tierflow jobs retry <job>`.

use clap::{Args, Subcommand};
use tierflow_store::webhooks::{
    self, DEFAULT_ROTATION_OVERLAP_SECS, EndpointStatus, NewEndpoint, WebhookEndpoint,
};
use tierflow_worker::webhook::Secret;
use uuid::Uuid;

use super::worker::store_context;
use crate::cli::{DatabaseArgs, EventArgs, OutputArgs};
use crate::database;

#[derive(Debug, Args)]
pub struct WebhooksArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(subcommand)]
    pub command: WebhooksCommand,
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Every endpoint, without secrets.
    List {
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Add an endpoint; prints its secret (`whsec_…`) once.
    Create {
        /// Where deliveries are POSTed (http or https; redirects are not followed).
        url: String,
        /// What it is for.
        #[arg(long, env = "TIERFLOW_WEBHOOK_DESCRIPTION", default_value = "")]
        description: String,
        /// An event type to deliver (repeatable) [default: every type].
        #[arg(
            long = "event-type",
            env = "TIERFLOW_WEBHOOK_EVENT_TYPES",
            value_delimiter = ','
        )]
        event_types: Vec<String>,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Change an endpoint's URL, description or event types (queued and dead deliveries follow
    /// it to the new URL).
    Update {
        id: Uuid,
        /// The new URL (http or https).
        #[arg(long, env = "TIERFLOW_WEBHOOK_URL")]
        url: Option<String>,
        /// The new description.
        #[arg(long, env = "TIERFLOW_WEBHOOK_DESCRIPTION")]
        description: Option<String>,
        /// An event type to deliver (repeatable); replaces the list.
        #[arg(
            long = "event-type",
            env = "TIERFLOW_WEBHOOK_EVENT_TYPES",
            value_delimiter = ','
        )]
        event_types: Vec<String>,
        /// Deliver every event type (clears the list).
        #[arg(
            long,
            env = "TIERFLOW_WEBHOOK_ALL_EVENTS",
            conflicts_with = "event_types"
        )]
        all_events: bool,
    },
    /// Stop deliveries to an endpoint; its queued ones die, saying so.
    Disable {
        id: Uuid,
        /// Why, for the audit trail.
        #[arg(long, env = "TIERFLOW_REASON")]
        reason: Option<String>,
    },
    /// Resume deliveries to an endpoint (also one disabled by its 410 Gone).
    Enable { id: Uuid },
    /// Replace an endpoint's secret; prints the new one once. The old one keeps signing beside
    /// it for --overlap-secs, so receivers can switch without failed checks.
    RotateSecret {
        id: Uuid,
        /// Seconds the old secret keeps signing beside the new one (0: replace it now).
        #[arg(long, env = "TIERFLOW_WEBHOOK_OVERLAP_SECS", default_value_t = DEFAULT_ROTATION_OVERLAP_SECS)]
        overlap_secs: i64,
        #[command(flatten)]
        out: OutputArgs,
    },
    /// Print a fresh secret for TIERFLOW_WEBHOOK_SECRET (endpoints configured by environment).
    /// Needs no database.
    NewSecret,
}

fn print(e: &WebhookEndpoint) {
    let types = if e.event_types.is_empty() {
        "every event".to_owned()
    } else {
        e.event_types.join(", ")
    };
    let status = match (e.status, &e.disabled_reason) {
        (EndpointStatus::Enabled, _) => "enabled".to_owned(),
        (EndpointStatus::Disabled, Some(why)) => format!("disabled ({why})"),
        (EndpointStatus::Disabled, None) => "disabled".to_owned(),
    };
    println!("{}  {status:<10}  {}  [{types}]", e.id, e.url);
}

pub async fn run(args: WebhooksArgs) -> anyhow::Result<()> {
    if let WebhooksCommand::NewSecret = args.command {
        println!("{}", Secret::generate().expose());
        return Ok(());
    }
    let db = database::connect(&args.db).await?;
    let none = EventArgs {
        webhook_urls: vec![],
        webhook_secret: None,
    };
    let ctx = store_context(&none).acting_as(super::operator());
    let mut conn = db.pool.acquire().await?;
    match args.command {
        WebhooksCommand::List { out } => {
            let all = webhooks::list(&mut conn).await?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no webhook endpoints; add one with `tierflow webhooks create <url>`");
            } else {
                all.iter().for_each(print);
            }
        }
        WebhooksCommand::Create {
            url,
            description,
            event_types,
            out,
        } => {
            let new = NewEndpoint {
                url,
                description,
                event_types,
            };
            let made = webhooks::create(&mut conn, &ctx, new).await?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&made)?);
            } else {
                print(&made.endpoint);
                println!(
                    "secret {} (shown once: give it to the receiver)",
                    made.secret
                );
            }
        }
        WebhooksCommand::Update {
            id,
            url,
            description,
            event_types,
            all_events,
        } => {
            let event_types = match (all_events, event_types.is_empty()) {
                (true, _) => Some(vec![]),
                (false, true) => None,
                (false, false) => Some(event_types),
            };
            let change = webhooks::EndpointUpdate {
                url,
                description,
                event_types,
            };
            print(&webhooks::update(&mut conn, &ctx, id, change).await?);
        }
        WebhooksCommand::Disable { id, reason } => {
            let reason = reason
                .map(tierflow_domain::ids::Reason::parse)
                .transpose()?;
            let e = webhooks::set_status(
                &mut conn,
                &ctx,
                id,
                EndpointStatus::Disabled,
                reason.as_ref().map(|r| r.as_str()),
            )
            .await?;
            print(&e);
        }
        WebhooksCommand::Enable { id } => {
            let e =
                webhooks::set_status(&mut conn, &ctx, id, EndpointStatus::Enabled, None).await?;
            print(&e);
        }
        WebhooksCommand::RotateSecret {
            id,
            overlap_secs,
            out,
        } => {
            let made = webhooks::rotate_secret(&mut conn, &ctx, id, overlap_secs).await?;
            if out.json {
                println!("{}", serde_json::to_string_pretty(&made)?);
            } else {
                print(&made.endpoint);
                println!(
                    "secret {} (shown once); the old one also signs until {}",
                    made.secret,
                    made.endpoint
                        .previous_secret_expires_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "now (no overlap)".into())
                );
            }
        }
        WebhooksCommand::NewSecret => {}
    }
    Ok(())
}
