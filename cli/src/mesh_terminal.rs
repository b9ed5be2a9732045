//! `nsh mesh send|inbox|presence` and `nsh mesh token decode`: the mesh from a terminal,
//! for people trying it without an MCP client.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use nsh_mesh_client::inbox::{Filter, InboxEntry};
use nsh_mesh_client::link::{ConnectionState, TokenSource, describe};
use nsh_mesh_client::terminal;
use nsh_mesh_transport::token;
use nsh_mesh_transport::wire::{SendStatus, Target};
use serde_json::json;

use crate::mesh_client::{InboxDirArg, MeshConnection, one_inbox};
use crate::output::{Format, OutputArg};

#[derive(Debug, Args)]
pub(crate) struct SendArgs {
    /// The agent to send to (of the token's team).
    #[arg(
        long,
        value_name = "AGENT",
        conflicts_with = "group",
        required_unless_present = "group"
    )]
    to: Option<String>,
    /// The group to send to (joined first; the token must allow it).
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// The message.
    text: String,
    #[command(flatten)]
    connection: MeshConnection,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, Args)]
pub(crate) struct PresenceArgs {
    #[command(flatten)]
    connection: MeshConnection,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, Args)]
pub(crate) struct InboxArgs {
    /// Stay connected as the token's agent and print messages as they arrive (each is stored
    /// in the inbox before the mesh hears it arrived). Ctrl-C stops.
    #[arg(long, short = 'f')]
    follow: bool,
    /// Mark the printed messages read, so hooks and `mesh_inbox` do not deliver them again.
    #[arg(long)]
    mark_read: bool,
    /// Whose inbox without a token: the agent's team (with --agent).
    #[arg(long, requires = "agent")]
    team: Option<String>,
    /// Whose inbox without a token: the agent (with --team).
    #[arg(long, requires = "team")]
    agent: Option<String>,
    #[command(flatten)]
    inbox: InboxDirArg,
    #[command(flatten)]
    connection: MeshConnection,
    #[command(flatten)]
    output: OutputArg,
}

#[derive(Debug, Args)]
pub(crate) struct DecodeArgs {
    /// The token; without it, --token-file or NSH_MESH_TOKEN_FILE.
    #[arg(value_name = "JWT")]
    token: Option<String>,
    /// A file holding the token.
    #[arg(long, value_name = "FILE", env = nsh_contract::env::mesh_client::TOKEN_FILE)]
    token_file: Option<PathBuf>,
    /// Also check the signature with this team key.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArg,
}

pub(crate) async fn send(args: SendArgs) -> anyhow::Result<()> {
    let target = match (args.to, args.group) {
        (Some(agent), _) => Target::Agent(agent),
        (None, Some(group)) => Target::Group(group),
        (None, None) => anyhow::bail!("say where the message goes: --to AGENT or --group GROUP"),
    };
    let token = args.connection.token_source()?;
    let ack = terminal::send(&args.connection.server, &token, target, args.text).await?;
    let mut out = std::io::stdout().lock();
    if !args.output.write_data(&mut out, &ack)? {
        let status = ack.status.map_or("sent", SendStatus::as_str);
        match &ack.delivered_to {
            Some(members) => writeln!(
                out,
                "{status} (id {}) to {}",
                ack.id,
                if members.is_empty() {
                    "no member online".to_owned()
                } else {
                    members.join(", ")
                }
            )?,
            None => writeln!(out, "{status} (id {})", ack.id)?,
        }
    }
    Ok(())
}

pub(crate) async fn presence(args: PresenceArgs) -> anyhow::Result<()> {
    let token = args.connection.token_source()?;
    let list = terminal::presence(&args.connection.server, &token).await?;
    let mut out = std::io::stdout().lock();
    if args.output.write_data(&mut out, &list)? {
        return Ok(());
    }
    let mut rows = crate::table::table(&["AGENT", "ONLINE", "SINCE", "GROUPS"]);
    for agent in &list.agents {
        rows.add_row(vec![
            agent.id.clone(),
            if agent.online { "yes" } else { "no" }.to_owned(),
            agent.since.clone(),
            agent.groups.join(", "),
        ]);
    }
    writeln!(out, "{rows}")?;
    Ok(())
}

pub(crate) async fn inbox(args: InboxArgs) -> anyhow::Result<()> {
    let dir = args.inbox.resolve()?;
    // Whose inbox: the flags, else the token's claims, else the only inbox in the folder.
    let named = match (&args.team, &args.agent) {
        (Some(team), Some(agent)) => Some((team.clone(), agent.clone())),
        _ => match args.connection.token_source() {
            Ok(source) => {
                let (_, claims) = source.peek()?;
                Some((claims.team, claims.sub))
            }
            Err(_) => None,
        },
    };
    let inbox = one_inbox(&dir, named)?;
    let format = args.output.format();
    let mut out = std::io::stdout().lock();
    let Some(inbox) = inbox else {
        anyhow::ensure!(
            args.follow,
            "no inbox in {} yet: it is made when the agent's mesh client (or `nsh mesh inbox --follow --token-file FILE`) first receives mail",
            dir.display()
        );
        anyhow::bail!("--follow needs the agent's token: pass --token-file FILE");
    };
    let unread = inbox.unread(&Filter::default(), usize::MAX)?;
    for entry in &unread.messages {
        print_entry(&mut out, entry, format)?;
    }
    if args.mark_read {
        inbox.mark_read(unread.messages.iter().map(|e| e.message.id.as_str()))?;
    }
    if !args.follow {
        if unread.messages.is_empty() && format == Format::Table {
            writeln!(
                out,
                "no unread messages for {}/{}",
                inbox.team(),
                inbox.agent()
            )?;
        }
        return Ok(());
    }
    drop(out);
    let token = args.connection.token_source()?;
    let (sent, mut received) = tokio::sync::mpsc::unbounded_channel();
    let (state_tx, mut states) = tokio::sync::mpsc::unbounded_channel();
    let _link = terminal::follow(
        args.connection.server.clone(),
        token,
        inbox.clone(),
        sent,
        state_tx,
    )
    .await?;
    let shutdown = crate::signal::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            Some(entry) = received.recv() => {
                print_entry(&mut std::io::stdout().lock(), &entry, format)?;
                if args.mark_read {
                    let inbox = inbox.clone();
                    let id = entry.message.id.clone();
                    tokio::task::spawn_blocking(move || inbox.mark_read([id.as_str()]))
                        .await
                        .context("marking a message read")??;
                }
            }
            Some(state) = states.recv() => report_state(&state),
        }
    }
}

/// The connection on stderr (stdout stays the messages).
fn report_state(state: &ConnectionState) {
    // The link itself logs a lost connection and its retries.
    if let ConnectionState::Connected { .. } = state {
        tracing::info!(state = %describe(state), "following the inbox; Ctrl-C stops");
    }
}

fn print_entry(
    out: &mut impl std::io::Write,
    entry: &InboxEntry,
    format: Format,
) -> anyhow::Result<()> {
    let m = &entry.message;
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string(entry)?)?,
        Format::Yaml => write!(out, "---\n{}", serde_saphyr::to_string(entry)?)?,
        Format::Table => {
            let to = match (&m.group, &m.to) {
                (Some(group), _) => format!("#{group}"),
                (None, Some(to)) => to.clone(),
                (None, None) => "you".to_owned(),
            };
            // One line per message: control characters a sender put in the text are shown
            // escaped, never played to this terminal.
            writeln!(
                out,
                "{} {} -> {}: {}",
                m.timestamp,
                m.from,
                to,
                m.text.escape_debug()
            )?;
        }
    }
    Ok(())
}

pub(crate) fn decode(args: &DecodeArgs) -> anyhow::Result<()> {
    let source = match (&args.token, &args.token_file) {
        (Some(token), _) => TokenSource::Inline(token.clone()),
        (None, Some(file)) => TokenSource::File(file.clone()),
        (None, None) => {
            anyhow::bail!("give the token (nsh mesh token decode JWT) or --token-file FILE")
        }
    };
    let (text, claims) = source.peek()?;
    let signature = match &args.key_file {
        None => "not checked (pass --key-file to check it)".to_owned(),
        Some(path) => {
            let key = crate::keys::read_key(path)?;
            let keys = std::collections::HashMap::from([(claims.team.clone(), key)]);
            match token::verify_with(&text, &keys, Duration::MAX, token::now_unix()) {
                Ok(_) => "valid".to_owned(),
                Err(err) => format!("INVALID: {err}"),
            }
        }
    };
    let now = token::now_unix();
    let expires = if claims.exp > now {
        format!(
            "in {}",
            humantime::format_duration(Duration::from_secs(claims.exp - now))
        )
    } else {
        format!(
            "expired {} ago",
            humantime::format_duration(Duration::from_secs(now - claims.exp))
        )
    };
    let mut out = std::io::stdout().lock();
    let data = json!({ "claims": claims, "expires": expires, "signature": signature });
    if args.output.write_data(&mut out, &data)? {
        return Ok(());
    }
    let time = |secs: u64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs))
            .to_string()
    };
    writeln!(out, "team:      {}", claims.team)?;
    writeln!(out, "agent:     {}", claims.sub)?;
    writeln!(
        out,
        "groups:    {}",
        if claims.groups.is_empty() {
            "(none: the agent may join no group)".to_owned()
        } else {
            claims.groups.join(", ")
        }
    )?;
    writeln!(out, "audience:  {}", claims.aud.0.join(", "))?;
    writeln!(out, "issued:    {}", time(claims.iat))?;
    writeln!(out, "expires:   {} ({expires})", time(claims.exp))?;
    writeln!(out, "signature: {signature}")?;
    Ok(())
}
