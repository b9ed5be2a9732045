//! `nsh mesh client` (the agent's MCP stdio server) and `nsh mesh hook` (Claude Code hooks).

use std::io::{Read as _, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use nsh_contract::command::mesh_client_flag as flag;
use nsh_contract::env;
use nsh_mesh_client::hook_install::{self, Scope};
use nsh_mesh_client::hooks::{self, HookEvent, HookLimits};
use nsh_mesh_client::inbox::{Inbox, InboxLimits};
use nsh_mesh_client::link::TokenSource;
use nsh_mesh_client::push::PushMode;
use nsh_mesh_client::{ClientOptions, McpTransport, serve};

/// How an agent reaches the mesh: the server and its token (shared by every verb that
/// connects).
#[derive(Debug, Clone, Args)]
pub(crate) struct MeshConnection {
    /// The mesh server: ws://HOST:PORT or http://HOST:PORT (e.g. ws://127.0.0.1:3456 or
    /// ws://mesh.team.svc:3456).
    #[arg(long = flag::SERVER, env = env::mesh_client::SERVER, default_value = nsh_contract::url::DEFAULT_MESH_URL)]
    pub(crate) server: String,
    /// File holding the agent's JWT (re-read on every reconnect, so rotation is picked up).
    #[arg(
        long = flag::TOKEN_FILE,
        value_name = "FILE",
        env = env::mesh_client::TOKEN_FILE,
        conflicts_with = "token"
    )]
    pub(crate) token_file: Option<PathBuf>,
    /// The agent's JWT itself.
    #[arg(long, env = env::mesh_client::TOKEN, hide_env_values = true)]
    pub(crate) token: Option<String>,
}

impl MeshConnection {
    pub(crate) fn token_source(&self) -> anyhow::Result<TokenSource> {
        match (&self.token_file, &self.token) {
            (Some(path), _) => Ok(TokenSource::File(path.clone())),
            (None, Some(token)) => Ok(TokenSource::Inline(token.clone())),
            (None, None) => anyhow::bail!(
                "no token: pass --token-file FILE, --token JWT, or set NSH_MESH_TOKEN_FILE (mint one with `nsh mesh token --out FILE`)"
            ),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    #[command(flatten)]
    connection: MeshConnection,
    #[command(flatten)]
    inbox: InboxDirArg,
    /// How new messages reach the conversation: `auto` sends Claude Code channel events to
    /// clients that advertise `claude/channel` (or are Claude Code) and logging notifications
    /// to others.
    #[arg(long, value_enum, default_value_t = Push::Auto)]
    push: Push,
    /// Messages held for push while the MCP client is busy; beyond it the oldest notification
    /// is dropped (the message stays unread in the inbox).
    #[arg(long, default_value_t = 1024)]
    push_buffer: usize,
    /// Most undelivered bytes the inbox holds; a message past it is refused (not acked), so it
    /// stays with the sender or the mesh's store instead of filling the disk.
    #[arg(long, default_value_t = InboxLimits::default().max_unread_bytes)]
    inbox_max_unread_bytes: u64,
    /// Serve MCP over streamable HTTP at http://ADDR/mcp (a long-running sidecar, with
    /// /healthz and /readyz) instead of stdio.
    #[arg(long = flag::LISTEN, value_name = "ADDR", env = env::mesh_client::LISTEN)]
    listen: Option<std::net::SocketAddr>,
    /// With --listen: serve /healthz, /readyz and /metrics here instead of beside /mcp.
    #[arg(long = flag::ADMIN_LISTEN, value_name = "ADDR", requires = "listen")]
    admin_listen: Option<std::net::SocketAddr>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Push {
    Auto,
    Channel,
    Logging,
    Off,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct InboxDirArg {
    /// Folder of the inboxes (`<team>/<agent>.jsonl`, `<team>/<agent>.trigger`); default
    /// ~/.claude/mesh.
    #[arg(long = flag::INBOX_DIR, value_name = "DIR", env = env::mesh_client::INBOX_DIR)]
    inbox_dir: Option<PathBuf>,
}

impl InboxDirArg {
    pub(crate) fn resolve(&self) -> anyhow::Result<PathBuf> {
        match &self.inbox_dir {
            Some(dir) => Ok(dir.clone()),
            None => Ok(crate::paths::home()?.join(".claude/mesh")),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct HookArgs {
    #[command(subcommand)]
    verb: HookVerb,
}

#[derive(Debug, Subcommand)]
enum HookVerb {
    /// Claude Code SessionStart hook: unread mail as additional context.
    #[command(name = "SessionStart")]
    SessionStart(HookRunArgs),
    /// Claude Code UserPromptSubmit hook: unread mail as additional context.
    #[command(name = "UserPromptSubmit")]
    UserPromptSubmit(HookRunArgs),
    /// Claude Code PostToolUse hook: unread mail as additional context.
    #[command(name = "PostToolUse")]
    PostToolUse(HookRunArgs),
    /// Claude Code Stop hook: keeps Claude working while there is unread mail.
    #[command(name = "Stop")]
    Stop(HookRunArgs),
    /// Add the four hooks to a Claude Code settings file (atomically, with a backup).
    Install(InstallArgs),
    /// Remove the nsh-mesh hooks from a Claude Code settings file.
    Uninstall(UninstallArgs),
}

#[derive(Debug, Args)]
struct HookRunArgs {
    #[command(flatten)]
    inbox: InboxDirArg,
    #[command(flatten)]
    owner: MailOwner,
    /// Most messages one injection carries.
    #[arg(long, default_value_t = HookLimits::default().max_messages)]
    max_messages: usize,
    /// Most characters one injection carries (at least one message always goes).
    #[arg(long, default_value_t = HookLimits::default().max_chars)]
    max_chars: usize,
}

/// Whose mail a hook delivers. Without any of these, the only inbox in the folder; with
/// several there, the hook refuses rather than mix two agents' (or two teams') mail.
#[derive(Debug, Clone, Args)]
pub(crate) struct MailOwner {
    /// The agent's token file: its `team` and `sub` name the inbox (the signature is not
    /// checked; the file only says whose inbox this is). --team and --agent take precedence.
    #[arg(long = flag::TOKEN_FILE, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Team of the agent whose mail to deliver (with --agent).
    #[arg(long, env = env::mesh_client::TEAM, requires = "agent")]
    team: Option<String>,
    /// Agent whose mail to deliver (with --team).
    #[arg(long, env = env::mesh_client::AGENT, requires = "team")]
    agent: Option<String>,
}

impl MailOwner {
    /// `(team, agent)` when told, from the flags or the token file.
    fn named(&self) -> anyhow::Result<Option<(String, String)>> {
        if let (Some(team), Some(agent)) = (&self.team, &self.agent) {
            return Ok(Some((team.clone(), agent.clone())));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let (_, claims) = TokenSource::File(path.clone()).peek()?;
        Ok(Some((claims.team, claims.sub)))
    }

    /// The one inbox this hook delivers from (`None`: no inbox yet, nothing to deliver).
    fn inbox(&self, dir: &std::path::Path) -> anyhow::Result<Option<Inbox>> {
        one_inbox(dir, self.named()?)
    }
}

/// The inbox of `named` (team, agent) in `dir`; without a name, the only inbox there (`None`
/// when there is none yet). Several, unnamed: an error listing them, never a mix.
pub(crate) fn one_inbox(
    dir: &std::path::Path,
    named: Option<(String, String)>,
) -> anyhow::Result<Option<Inbox>> {
    if let Some((team, agent)) = named {
        return Ok(Some(Inbox::open(dir, team, agent)?));
    }
    let mut all = Inbox::all_in(dir)?;
    match all.len() {
        0 | 1 => Ok(all.pop()),
        _ => {
            let names: Vec<String> = all
                .iter()
                .map(|i| format!("{}/{}", i.team(), i.agent()))
                .collect();
            anyhow::bail!(
                "{} holds the inboxes of several agents ({}); say whose mail with --token-file FILE or --team TEAM --agent AGENT (`nsh mesh hook install` writes them into the hooks)",
                dir.display(),
                names.join(", ")
            )
        }
    }
}

impl MailOwner {
    /// These flags, as words of a hook command; `None` when none was given.
    fn to_args(&self) -> anyhow::Result<Option<String>> {
        let word = |text: &str| nsh_contract::quote::word(text).into_owned();
        match (&self.team, &self.agent, &self.token_file) {
            (Some(team), Some(agent), _) => Ok(Some(format!(
                " --team {} --agent {}",
                word(team),
                word(agent)
            ))),
            (_, _, Some(file)) => {
                // A token file that names nobody would make every hook fail later.
                self.named()?;
                let file = std::path::absolute(file).unwrap_or_else(|_| file.clone());
                Ok(Some(format!(
                    " --{} {}",
                    flag::TOKEN_FILE,
                    word(&file.display().to_string())
                )))
            }
            _ => Ok(None),
        }
    }
}

#[derive(Debug, Args)]
struct InstallArgs {
    /// `user`: ~/.claude/settings.json; `project`: .claude/settings.json; `local`:
    /// .claude/settings.local.json.
    #[arg(long, value_enum, default_value_t = InstallScope::User)]
    scope: InstallScope,
    /// Project folder for the project and local scopes.
    #[arg(long, value_name = "DIR", default_value = ".")]
    project_dir: PathBuf,
    /// Inbox folder the hooks read, when not the default.
    #[arg(long, value_name = "DIR")]
    inbox_dir: Option<PathBuf>,
    #[command(flatten)]
    owner: MailOwner,
}

#[derive(Debug, Args)]
struct UninstallArgs {
    /// The settings file's scope, as for `hook install`.
    #[arg(long, value_enum, default_value_t = InstallScope::User)]
    scope: InstallScope,
    /// Project folder for the project and local scopes.
    #[arg(long, value_name = "DIR", default_value = ".")]
    project_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum InstallScope {
    User,
    Project,
    Local,
}

pub(crate) async fn client(args: ClientArgs) -> anyhow::Result<()> {
    let token = args.connection.token_source()?;
    if args.listen.is_none() && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        // Someone ran it by hand: say what it is rather than wait silently.
        #[allow(clippy::print_stderr)]
        {
            eprintln!(
                "nsh mesh client is an MCP stdio server: an MCP client (Claude Code, `nsh agent launch`) starts it and talks to it on stdin/stdout; it is waiting for one now. To try the mesh from a terminal, use `nsh mesh send`, `nsh mesh inbox --follow` and `nsh mesh presence`."
            );
        }
    }
    let options = ClientOptions {
        server: args.connection.server,
        token,
        inbox_dir: args.inbox.resolve()?,
        push: match args.push {
            Push::Auto => PushMode::Auto,
            Push::Channel => PushMode::Channel,
            Push::Logging => PushMode::Logging,
            Push::Off => PushMode::Off,
        },
        push_buffer: args.push_buffer,
        inbox_limits: InboxLimits {
            max_unread_bytes: args.inbox_max_unread_bytes,
            ..InboxLimits::default()
        },
        mcp: match args.listen {
            Some(listen) => McpTransport::Http {
                listen,
                admin: args.admin_listen,
            },
            None => McpTransport::Stdio,
        },
    };
    serve(options, crate::signal::shutdown_signal()).await?;
    Ok(())
}

pub(crate) fn hook(args: HookArgs) -> anyhow::Result<()> {
    let (event, run) = match args.verb {
        HookVerb::SessionStart(run) => (HookEvent::SessionStart, run),
        HookVerb::UserPromptSubmit(run) => (HookEvent::UserPromptSubmit, run),
        HookVerb::PostToolUse(run) => (HookEvent::PostToolUse, run),
        HookVerb::Stop(run) => (HookEvent::Stop, run),
        HookVerb::Install(install) => return install_hooks(&install),
        HookVerb::Uninstall(uninstall) => return uninstall_hooks(&uninstall),
    };
    let dir = run.inbox.resolve()?;
    let inboxes: Vec<Inbox> = run.owner.inbox(&dir)?.into_iter().collect();
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read the hook input on stdin")?;
    let limits = HookLimits {
        max_messages: run.max_messages.max(1),
        max_chars: run.max_chars,
    };
    let delivered = hooks::run(
        event,
        &input,
        &inboxes,
        limits,
        &mut std::io::stdout().lock(),
    )?;
    tracing::debug!(event = event.name(), delivered, "hook done");
    Ok(())
}

impl InstallScope {
    fn settings(self, project_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
        let scope = match self {
            Self::User => Scope::User,
            Self::Project => Scope::Project,
            Self::Local => Scope::Local,
        };
        Ok(scope.settings_path(&crate::paths::home()?, project_dir))
    }
}

fn install_hooks(args: &InstallArgs) -> anyhow::Result<()> {
    let settings = args.scope.settings(&args.project_dir)?;
    // The project's settings go to git and to everyone's machine: `nsh` from PATH, not this
    // machine's path to it, and the agent from each person's environment or inbox folder.
    let shared = matches!(args.scope, InstallScope::Project);
    let nsh = if shared {
        "nsh".to_owned()
    } else {
        let exe = std::env::current_exe().context("cannot find the nsh binary's path")?;
        nsh_contract::quote::word(&exe.display().to_string()).into_owned()
    };
    let owner = match args.owner.to_args()? {
        Some(words) => words,
        None if shared => String::new(),
        None => anyhow::bail!(
            "say whose mail the hooks deliver: --token-file FILE (the agent's token) or --team TEAM --agent AGENT"
        ),
    };
    let inbox = args
        .inbox_dir
        .as_ref()
        .map(|dir| {
            format!(
                " --inbox-dir {}",
                nsh_contract::quote::word(&dir.display().to_string())
            )
        })
        .unwrap_or_default();
    let edit = hook_install::install(&settings, |event| {
        format!("{nsh} mesh hook {}{owner}{inbox}", event.name())
    })?;
    let mut out = std::io::stdout().lock();
    report(
        &mut out,
        &edit,
        &format!("installed the nsh-mesh hooks in {}", settings.display()),
        &format!("the nsh-mesh hooks are already in {}", settings.display()),
    )?;
    if shared && owner.is_empty() {
        writeln!(
            out,
            "the project's hooks name no agent: each person's hooks deliver the agent that {} and {} name, or the only inbox in their inbox folder",
            env::mesh_client::TEAM,
            env::mesh_client::AGENT
        )?;
    }
    Ok(())
}

fn uninstall_hooks(args: &UninstallArgs) -> anyhow::Result<()> {
    let settings = args.scope.settings(&args.project_dir)?;
    let edit = hook_install::uninstall(&settings)?;
    report(
        &mut std::io::stdout().lock(),
        &edit,
        &format!("removed the nsh-mesh hooks from {}", settings.display()),
        &format!(
            "no nsh-mesh hooks in {} (other scopes: --scope user|project|local)",
            settings.display()
        ),
    )
}

/// What a settings edit did: `changed` (and where the old file went) or `unchanged`.
fn report(
    out: &mut impl std::io::Write,
    edit: &nsh_config_files::JsonEdit,
    changed: &str,
    unchanged: &str,
) -> anyhow::Result<()> {
    if !edit.changed {
        writeln!(out, "{unchanged}")?;
        return Ok(());
    }
    writeln!(out, "{changed}")?;
    if let Some(backup) = &edit.backup {
        writeln!(out, "previous settings saved to {}", backup.display())?;
    }
    Ok(())
}
