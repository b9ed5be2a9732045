//! `nsh agent …`: launch an agent (the `claude` CLI) from layered `.agent.yaml` settings.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use nsh_agent_config::catalog::{self, CatalogContext};
use nsh_agent_config::files;
use nsh_agent_config::launch::{self, Launch};
use nsh_agent_config::layers::{self, ConfigFile, Inputs, Resolved};
use nsh_agent_config::settings::{McpServer, McpSettings, PermissionMode, Settings};

#[derive(Debug, Subcommand)]
pub(crate) enum AgentVerb {
    /// Assemble the agent's command (MCP config, hooks, flags) and run it, or print it.
    Launch(LaunchArgs),
    /// Show the merged settings; with --explain, where each value came from.
    Config(ConfigArgs),
    /// Print the JSON Schema of .agent.yaml (for editors).
    Schema,
    /// List the built-in MCP presets and profiles.
    Presets,
}

#[derive(Debug, Default, Args)]
pub(crate) struct Layering {
    /// Profile to start from (built-in: solo-developer, team-member).
    #[arg(long)]
    profile: Option<String>,
    /// Model for the agent (`--model`).
    #[arg(long)]
    model: Option<String>,
    /// Permission mode for the agent.
    #[arg(long, value_enum)]
    permission_mode: Option<Permission>,
    /// Add an MCP preset (repeatable).
    #[arg(long = "mcp", value_name = "PRESET")]
    presets: Vec<String>,
    /// Project folder [default: the folder of the nearest .agent.yaml, else the current one].
    #[arg(long = nsh_contract::command::PROJECT_DIR_FLAG, value_name = "DIR")]
    project_dir: Option<PathBuf>,
    /// A settings file layered over the project's and the user's (`nsh up` writes one per
    /// local agent).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Claude Code's own spellings (`acceptEdits`) are accepted beside the kebab-case ones.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Permission {
    Default,
    #[value(alias = "acceptEdits")]
    AcceptEdits,
    Plan,
    #[value(alias = "bypassPermissions")]
    BypassPermissions,
    #[value(alias = "dontAsk")]
    DontAsk,
}

#[derive(Debug, Args)]
pub(crate) struct LaunchArgs {
    #[command(flatten)]
    layering: Layering,
    /// Print the command and the files it needs instead of running it.
    #[arg(long)]
    dry_run: bool,
    /// Arguments passed on to the agent program, after `--`.
    #[arg(last = true)]
    extra: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    #[command(flatten)]
    layering: Layering,
    /// Say where each value came from (built-in defaults, a profile, a preset, a file, flags).
    #[arg(long)]
    explain: bool,
}

pub(crate) fn run(verb: AgentVerb) -> anyhow::Result<()> {
    match verb {
        AgentVerb::Launch(args) => launch_agent(args),
        AgentVerb::Config(args) => config(&args),
        AgentVerb::Schema => {
            let schema = nsh_agent_config::settings::json_schema();
            let text = serde_json::to_string_pretty(&schema)?;
            writeln!(std::io::stdout().lock(), "{text}")?;
            Ok(())
        }
        AgentVerb::Presets => presets(),
    }
}

struct Loaded {
    resolved: Resolved,
    project_dir: PathBuf,
}

fn load(layering: &Layering) -> anyhow::Result<Loaded> {
    let cwd = std::env::current_dir().context("cannot read the current folder")?;
    let project_file = match &layering.project_dir {
        Some(dir) => Some(dir.join(files::PROJECT_FILE)).filter(|p| p.is_file()),
        None => files::find_project_file(&cwd),
    };
    let project_dir = layering
        .project_dir
        .clone()
        .or_else(|| {
            project_file
                .as_ref()
                .and_then(|p| p.parent().map(Path::to_path_buf))
        })
        .unwrap_or(cwd);
    let project: Option<ConfigFile> = match &project_file {
        Some(path) => files::load(path)?,
        None => None,
    };
    let home = crate::paths::home()?;
    let xdg = std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from);
    let user = files::load(&files::user_file(xdg.as_deref(), &home))?;
    let config = match &layering.config {
        Some(path) => Some(
            files::load(path)?
                .with_context(|| format!("--config {}: no such file", path.display()))?,
        ),
        None => None,
    };
    let command_line = Settings {
        profile: layering.profile.clone(),
        model: layering.model.clone(),
        permission_mode: layering.permission_mode.map(|p| match p {
            Permission::Default => PermissionMode::Default,
            Permission::AcceptEdits => PermissionMode::AcceptEdits,
            Permission::Plan => PermissionMode::Plan,
            Permission::BypassPermissions => PermissionMode::BypassPermissions,
            Permission::DontAsk => PermissionMode::DontAsk,
        }),
        mcp: (!layering.presets.is_empty()).then(|| McpSettings {
            presets: Some(layering.presets.clone()),
            ..McpSettings::default()
        }),
        ..Settings::default()
    };
    let inputs = Inputs {
        project,
        user,
        config,
        command_line,
        context: CatalogContext {
            project_dir: project_dir.clone(),
            nsh: nsh_path()?,
            ..CatalogContext::default()
        },
    };
    Ok(Loaded {
        resolved: layers::resolve(&inputs)?,
        project_dir,
    })
}

/// The server `name` stands for, for `nsh mcp install`: one the user's agent settings define
/// (presets included), else a catalogue preset filled in from those settings.
pub(crate) fn catalog_server(name: &str) -> anyhow::Result<McpServer> {
    let loaded = load(&Layering::default())?;
    if let Some(server) = loaded.resolved.servers.get(name) {
        return Ok(server.clone());
    }
    let settings = &loaded.resolved.settings;
    let context = CatalogContext {
        project_dir: loaded.project_dir.clone(),
        nsh: nsh_path()?,
        mesh: settings.mesh.clone().unwrap_or_default(),
        gateway: settings.mcp.as_ref().and_then(|m| m.gateway.clone()),
        share: settings.mcp.as_ref().and_then(|m| m.share).unwrap_or(false),
    };
    catalog::preset(name, &context).map_err(|e| {
        anyhow::anyhow!("{e}; or give the server with --command CMD -- ARGS, or --url URL")
    })
}

fn nsh_path() -> anyhow::Result<String> {
    Ok(std::env::current_exe()
        .context("cannot find the nsh binary's path")?
        .display()
        .to_string())
}

/// Where the generated files of a project's launches live: one folder per project.
/// One folder per project and mesh identity: two agents launched in one project (`nsh up`'s
/// alice and bob) must not overwrite each other's files.
fn launch_dir(project_dir: &Path, token_file: Option<&str>) -> anyhow::Result<PathBuf> {
    use std::hash::{Hash as _, Hasher as _};
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .map_or_else(|| crate::paths::home().map(|h| h.join(".local/state")), Ok)?;
    let mut hasher = std::hash::DefaultHasher::new();
    project_dir.hash(&mut hasher);
    token_file.hash(&mut hasher);
    let name = project_dir
        .file_name()
        .map_or_else(|| "root".into(), |n| n.to_string_lossy().into_owned());
    Ok(state
        .join("nsh/launch")
        .join(format!("{name}-{:016x}", hasher.finish())))
}

fn assemble(loaded: &Loaded, extra: &[String]) -> anyhow::Result<Launch> {
    let hook_command = format!("{} mesh hook", nsh_contract::quote::word(&nsh_path()?));
    Ok(launch::assemble(
        &loaded.resolved,
        &launch_dir(
            &loaded.project_dir,
            loaded
                .resolved
                .settings
                .mesh
                .as_ref()
                .and_then(|m| m.token_file.as_deref()),
        )?,
        &hook_command,
        extra,
    ))
}

fn launch_agent(args: LaunchArgs) -> anyhow::Result<()> {
    let loaded = load(&args.layering)?;
    let launch = assemble(&loaded, &args.extra)?;
    if args.dry_run {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "# profile {} for {}",
            loaded.resolved.profile,
            loaded.project_dir.display()
        )?;
        for file in &launch.files {
            writeln!(out, "# {}: {}", file.purpose, file.path.display())?;
            write!(out, "{}", file.contents)?;
        }
        writeln!(out, "{}", launch.shell_line())?;
        return Ok(());
    }
    for file in &launch.files {
        nsh_config_files::write_atomic(&file.path, file.contents.as_bytes())?;
    }
    tracing::info!(command = %launch.shell_line(), "launching the agent");
    exec(&launch)
}

/// Replaces this process with the agent (so signals and the terminal go straight to it).
fn exec(launch: &Launch) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt as _;
    let err = std::process::Command::new(&launch.program)
        .args(&launch.args)
        .envs(&launch.env)
        .exec();
    if err.kind() == std::io::ErrorKind::NotFound {
        anyhow::bail!(
            "`{}` is not on PATH: install Claude Code (npm install -g @anthropic-ai/claude-code), or set `command:` in .agent.yaml",
            launch.program
        );
    }
    Err(err).with_context(|| format!("cannot run `{}`", launch.program))
}

fn config(args: &ConfigArgs) -> anyhow::Result<()> {
    let loaded = load(&args.layering)?;
    let mut out = std::io::stdout().lock();
    if args.explain {
        let mut lines = layers::explain(&loaded.resolved);
        // The profile first: it decides most of the rest.
        lines.sort_by_key(|(path, _, _)| path != "profile");
        let width = lines
            .iter()
            .map(|(p, v, _)| p.len() + v.len() + 3)
            .max()
            .unwrap_or(0)
            .min(60);
        for (path, value, source) in lines {
            let assignment = format!("{path} = {value}");
            writeln!(out, "{assignment:width$}  # {source}")?;
        }
    } else {
        let mut settings = loaded.resolved.settings.clone();
        settings.profile = Some(loaded.resolved.profile.clone());
        settings.profiles = None;
        write!(out, "{}", serde_saphyr::to_string(&settings)?)?;
    }
    Ok(())
}

fn presets() -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "MCP presets (mcp.presets, --mcp):")?;
    for preset in catalog::PRESETS {
        let shared = if preset.shareable { " [shareable]" } else { "" };
        writeln!(out, "  {:<12} {}{shared}", preset.name, preset.description)?;
    }
    writeln!(
        out,
        "  ([shareable]: with mcp.share, or `nsh mcp install --shared`, one process serves every agent)"
    )?;
    writeln!(out, "profiles (profile, --profile):")?;
    writeln!(
        out,
        "  {:<16} filesystem and git MCP servers",
        "solo-developer"
    )?;
    writeln!(
        out,
        "  {:<16} solo-developer plus the mesh client and its hooks (needs mesh.tokenFile)",
        "team-member"
    )?;
    Ok(())
}
