//! The `--config` file of `strom serve`, and `strom config check|default`.
//!
//! There is one table of settings: the fields of [`ServeArgs`]. A key of
//! the file is a field's id (the flag's name with `_`), and its value is
//! parsed by that flag's own parser, so a file, a flag and a `STROM_*`
//! variable can never mean different things. The file's values become the
//! flags' defaults before the command line is parsed again, which gives the
//! precedence flag > environment > file > built-in default from clap
//! itself. Other sections (`[auth]`) can be added beside these keys later:
//! the file is a table, and only unknown keys are refused.
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Args, Command, CommandFactory, FromArgMatches, Subcommand};

use strom::auth::AuthConfig;

use super::serve::{ServeArgs, configs};
use strom::config::EngineConfig;
use strom::server::ServerConfig;

#[derive(Subcommand)]
pub enum ConfigCmd {
    /// Validate a config file and print the effective configuration as TOML:
    /// the file, overridden by STROM_* variables, overridden by any `strom
    /// serve` flags given after FILE.
    Check {
        file: PathBuf,
        /// `strom serve` flags, as they would be given to it.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "SERVE_FLAGS")]
        serve_flags: Vec<OsString>,
    },
    /// Print every setting with its default and a one-line comment: a
    /// config file to start from (deploy/strom.toml is its output).
    Default,
}

/// Examples for the settings that have no default, printed commented out
/// by `config default` (a test uncomments them and loads them).
const EXAMPLES: &[(&str, &str)] = &[
    ("data_dir", "/var/lib/strom"),
    ("archive_dir", "/var/lib/strom-archives"),
    ("kafka_listen", "127.0.0.1:9092"),
    ("kafka_advertise", "broker1.example.com:9092"),
    ("metrics_listen", "127.0.0.1:9464"),
    ("cores", "4"),
    ("registered_bytes_max", "1073741824"),
];

pub fn run(cmd: &ConfigCmd) -> Result<(), String> {
    match cmd {
        ConfigCmd::Check { file, serve_flags } => check(file, serve_flags).map(|text| print!("{text}")),
        ConfigCmd::Default => {
            print!("{}", default_text());
            Ok(())
        }
    }
}

/// Parses the command line as clap does, except that `serve --config FILE`
/// (or STROM_CONFIG) first reads FILE into serve's defaults. A bad file
/// stops the process with one line and exit status 1, as other errors of
/// the commands do (docs/CLI.md).
pub fn parse<C: CommandFactory + FromArgMatches>() -> C {
    let cmd = C::command();
    let matches = cmd.clone().try_get_matches().unwrap_or_else(|e| exit(&e));
    let matches = match matches.subcommand() {
        Some(("serve", serve)) => match serve.get_one::<PathBuf>("config") {
            Some(path) => match load(&serve_command(), path) {
                Ok((file, _)) => cmd.mut_subcommand("serve", |s| with_file(s, &file)).try_get_matches().unwrap_or_else(|e| exit(&e)),
                Err(e) => {
                    eprintln!("strom serve: {e}");
                    std::process::exit(1);
                }
            },
            None => matches,
        },
        _ => matches,
    };
    C::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Exits as clap does on `e`, except that a bad value that came from a
/// STROM_* variable is told as that variable (clap names only the flag,
/// which the operator did not give).
fn exit(e: &clap::Error) -> ! {
    if let Some(message) = from_variable(e) {
        eprintln!("strom serve: {message}");
        std::process::exit(2);
    }
    e.exit()
}

/// `STROM_X="value" is invalid: why` when `e` refuses a serve setting's
/// value and that value is what the setting's variable holds.
fn from_variable(e: &clap::Error) -> Option<String> {
    if !matches!(e.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
        return None;
    }
    let (Some(ContextValue::String(flag)), Some(ContextValue::String(value))) =
        (e.get(ContextKind::InvalidArg), e.get(ContextKind::InvalidValue))
    else {
        return None;
    };
    let serve = serve_command();
    let arg = settings(&serve).find(|a| a.get_long().is_some_and(|long| flag.split(' ').next() == Some(&format!("--{long}"))))?;
    let var = arg.get_env()?;
    (std::env::var_os(var)?.to_str() == Some(value.as_str())).then(|| {
        let why = std::error::Error::source(e).map_or_else(|| e.kind().to_string(), ToString::to_string);
        format!("{}={value:?} is invalid: {why}", var.to_string_lossy())
    })
}

fn serve_command() -> Command {
    ServeArgs::augment_args(Command::new("serve"))
}

/// The settings: every flag of `serve` but `--config` itself.
fn settings(serve: &Command) -> impl Iterator<Item = &Arg> {
    serve.get_arguments().filter(|a| a.get_long().is_some() && !matches!(a.get_id().as_str(), "config" | "help" | "version"))
}

/// A file's settings: (key, value as its flag would take it).
type FileSettings = Vec<(String, String)>;

/// The file's settings as (key, value as a flag would take it), each key
/// known and each value accepted by its flag's parser, and its `[auth]`
/// section (off without one), from one reading of the file; errors name
/// the file and the key.
fn load(serve: &Command, path: &Path) -> Result<(FileSettings, AuthConfig), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e| format!("{}: {e}", path.display()))?;
    let mut file = Vec::with_capacity(table.len());
    let mut auth = AuthConfig::default();
    for (key, value) in table {
        if key == AUTH_KEY {
            auth = AuthConfig::from_toml(&value).map_err(|e| format!("{}: {e}", path.display()))?;
            continue;
        }
        let Some(arg) = settings(serve).find(|a| a.get_id().as_str() == key) else {
            return Err(format!("{}: unknown key `{key}` (`strom config default` prints every key)", path.display()));
        };
        let raw = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => return Err(format!("{}: `{key}` must be a string or an integer, not {}", path.display(), other.type_str())),
        };
        check_value(serve, arg, &raw).map_err(|why| format!("{}: `{key}` = {raw:?} is invalid: {why}", path.display()))?;
        file.push((key, raw));
    }
    Ok((file, auth))
}

/// The file's authentication section (`[auth]`, docs/DEPLOY.md): not a
/// flag, since users and tokens do not belong on a command line.
const AUTH_KEY: &str = "auth";

/// The `[auth]` section of the config file, if there is one (off when
/// there is no file or no section): for the start, whose settings clap took
/// from the file before `serve` ran.
pub fn auth_section(path: Option<&Path>) -> Result<AuthConfig, String> {
    match path {
        Some(path) => load(&serve_command(), path).map(|(_, auth)| auth),
        None => Ok(AuthConfig::default()),
    }
}

/// Runs `raw` through `arg`'s own parser, as `--flag=raw` on the command
/// line, and returns why it is refused. Only an error about this flag's
/// value counts: whatever else is wrong (a bad STROM_* variable) is
/// reported by the real parse.
fn check_value(serve: &Command, arg: &Arg, raw: &str) -> Result<(), String> {
    let long = arg.get_long().expect("a setting has a long flag");
    let argv = [OsString::from("serve"), OsString::from(format!("--{long}={raw}"))];
    let Err(e) = serve.clone().try_get_matches_from(argv) else {
        return Ok(());
    };
    let about_this = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s == &format!("--{long}") || s.starts_with(&format!("--{long} ")),
        _ => false,
    };
    if !about_this || !matches!(e.kind(), ErrorKind::ValueValidation | ErrorKind::InvalidValue) {
        return Ok(());
    }
    Err(std::error::Error::source(&e).map_or_else(|| e.kind().to_string(), ToString::to_string))
}

/// The data directory and configurations `strom serve --config FILE` (or
/// without a file) would run with, given no flags: its STROM_* variables
/// first, then the file, then the defaults. What `strom doctor` checks.
pub fn serve_configs(file: Option<&Path>) -> Result<(Option<PathBuf>, EngineConfig, ServerConfig), String> {
    let serve = serve_command();
    let (file, auth) = match file {
        Some(path) => load(&serve, path)?,
        None => Default::default(),
    };
    let matches =
        with_file(serve, &file).try_get_matches_from(["serve"]).map_err(|e| from_variable(&e).unwrap_or_else(|| e.to_string()))?;
    configs(&ServeArgs::from_arg_matches(&matches).map_err(|e| e.to_string())?, auth)
}

/// `serve` with the file's values as its defaults: clap then takes a flag
/// first, its STROM_* variable next, the file's value next and the
/// built-in default last.
fn with_file(serve: Command, file: &[(String, String)]) -> Command {
    file.iter().fold(serve, |cmd, (key, raw)| cmd.mut_arg(key, |a| a.default_value(raw.clone())))
}

/// `strom config check FILE [SERVE_FLAGS]`: the effective configuration as
/// TOML, once the file, the environment and the flags all parse and the
/// engine and the server accept what they make.
fn check(path: &Path, serve_flags: &[OsString]) -> Result<String, String> {
    let serve = serve_command();
    let argv = std::iter::once(OsString::from("serve")).chain(serve_flags.iter().cloned());
    let (args, matches, file, auth) = with_flags(&serve, path, argv)?;
    let mut text = effective_text(&serve, &matches, &file);
    let _ = writeln!(text, "# auth = {}  # file, [auth] (tokens are not shown)", auth.describe());
    configs(&args, auth)?;
    Ok(text)
}

/// The settings of this `strom serve` again, with `path` read anew: the
/// same flags (this process's own) and STROM_* variables over the file, as
/// at start. What a reload (SIGHUP) applies; errors name the file and key.
pub fn reread(path: &Path) -> Result<(ServeArgs, AuthConfig), String> {
    // `strom` takes no option before its command, so the arguments after
    // the program's name are `serve` and its flags.
    let argv = std::env::args_os().skip(1);
    with_flags(&serve_command(), path, argv).map(|(args, _, _, auth)| (args, auth))
}

/// `argv` (`serve` and its flags) parsed with `path`'s settings as the
/// defaults: the settings, the matches they came from, and the file.
fn with_flags(
    serve: &Command,
    path: &Path,
    argv: impl IntoIterator<Item = OsString>,
) -> Result<(ServeArgs, ArgMatches, FileSettings, AuthConfig), String> {
    let (file, auth) = load(serve, path)?;
    let matches =
        with_file(serve.clone(), &file).try_get_matches_from(argv).map_err(|e| from_variable(&e).unwrap_or_else(|| e.to_string()))?;
    let args = ServeArgs::from_arg_matches(&matches).map_err(|e| e.to_string())?;
    Ok((args, matches, file, auth))
}

/// Each setting as a TOML line with where its value came from, or a
/// comment for one that is not set.
fn effective_text(serve: &Command, matches: &ArgMatches, file: &[(String, String)]) -> String {
    let mut out = String::new();
    for arg in settings(serve) {
        let key = arg.get_id().as_str();
        let source = match matches.value_source(key) {
            None => {
                let _ = writeln!(out, "# {key} is not set");
                continue;
            }
            Some(ValueSource::CommandLine) => format!("--{}", arg.get_long().unwrap_or(key)),
            Some(ValueSource::EnvVariable) => arg.get_env().map_or_else(|| "environment".into(), |v| v.to_string_lossy().into_owned()),
            Some(_) if file.iter().any(|(k, _)| k == key) => "file".into(),
            Some(_) => "default".into(),
        };
        let raw = matches.get_raw(key).and_then(|mut v| v.next()).map(|v| v.to_string_lossy().into_owned()).unwrap_or_default();
        let _ = writeln!(out, "{key} = {}  # {source}", toml_value(&raw));
    }
    out
}

/// `strom config default`: every setting, its comment, flag and variable,
/// and its default (commented out, with an example, when it has none).
pub fn default_text() -> String {
    let serve = serve_command();
    let mut out = String::from(
        "# strom serve settings (`strom config default` prints this file).\n\
         # Precedence: a flag, then its STROM_* variable, then this file, then the default.\n",
    );
    for arg in settings(&serve) {
        let key = arg.get_id().as_str();
        let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
        let env = arg.get_env().map(|v| v.to_string_lossy().into_owned()).unwrap_or_default();
        let _ = writeln!(out, "\n# {help} [--{}, {env}]", arg.get_long().unwrap_or(key));
        match arg.get_default_values().first() {
            Some(default) => {
                let _ = writeln!(out, "{key} = {}", toml_value(&default.to_string_lossy()));
            }
            None => {
                let example = EXAMPLES.iter().find(|(k, _)| *k == key).map_or("", |(_, v)| v);
                let _ = writeln!(out, "#{key} = {}  # not set by default; for example", toml_value(example));
            }
        }
    }
    out
}

/// A value as TOML: an integer when it is one, else a quoted string (a
/// file's integers and strings both reach the flag's parser as text, so
/// either reads back the same).
fn toml_value(raw: &str) -> String {
    match raw.parse::<i64>() {
        Ok(_) => raw.to_string(),
        Err(_) if raw == "true" || raw == "false" => raw.to_string(),
        Err(_) => toml::Value::String(raw.to_string()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves: every setting without a default has an example, and each
    // example, uncommented, is a value its flag accepts.
    #[test]
    fn examples_cover_the_unset_settings_and_parse() {
        let serve = serve_command();
        for arg in settings(&serve).filter(|a| a.get_default_values().is_empty()) {
            let key = arg.get_id().as_str();
            let (_, example) = EXAMPLES.iter().find(|(k, _)| *k == key).unwrap_or_else(|| panic!("no example for {key}"));
            assert_eq!(check_value(&serve, arg, example), Ok(()), "{key}");
        }
        assert!(EXAMPLES.iter().all(|(k, _)| settings(&serve).any(|a| a.get_id().as_str() == *k)), "an example for no setting");
    }

    // Proves: a value is refused by its flag's parser, with its reason,
    // and a well-formed one is not.
    #[test]
    fn values_go_through_the_flags_parsers() {
        let serve = serve_command();
        let arg = |key: &str| settings(&serve).find(|a| a.get_id().as_str() == key).unwrap().clone();
        assert_eq!(check_value(&serve, &arg("fsync"), "interval:5"), Ok(()));
        assert!(check_value(&serve, &arg("fsync"), "sometimes").unwrap_err().contains("always, never or interval"));
        assert!(check_value(&serve, &arg("listen"), "nowhere").is_err());
        assert!(check_value(&serve, &arg("retention_ms"), "-2").unwrap_err().contains("-1 for no limit"));
        assert_eq!(check_value(&serve, &arg("retention_bytes"), "10GiB"), Ok(()));
    }

    // Proves: integers print bare and everything else quoted, so the text
    // is TOML whatever the value.
    #[test]
    fn values_print_as_toml() {
        assert_eq!(toml_value("-1"), "-1");
        assert_eq!(toml_value("127.0.0.1:7070"), "\"127.0.0.1:7070\"");
        assert_eq!(toml_value("a \"b\""), "'a \"b\"'");
    }
}
