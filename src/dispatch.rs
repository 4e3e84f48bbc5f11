//! Multi-call dispatch: `km <role> ...`, or a role chosen by the name the
//! binary was started under (`k8sm-scheduler`, `km-fit`, ...), hyperkube style.

use std::ffi::OsString;
use std::path::Path;

/// Every role km knows, with the extra program names that select it besides
/// `km-<role>`. A role listed here but not built into this binary is reported
/// as unknown by the command-line parser.
pub const ROLES: &[(&str, &[&str])] = &[
    ("apiserver", &["km-apiserver"]),
    ("completion", &[]),
    ("controller-manager", &["k8sm-controller-manager"]),
    ("dev-agent", &[]),
    ("dev-master", &[]),
    ("executor", &["k8sm-executor"]),
    ("fit", &[]),
    ("local", &[]),
    ("proxy", &["k8sm-proxy"]),
    ("scheduler", &["k8sm-scheduler"]),
    ("version", &[]),
];

/// The role selected by a program name (the basename of argv\[0\]), if any.
///
/// ```
/// use km::dispatch::role_for_program;
/// assert_eq!(role_for_program("k8sm-scheduler"), Some("scheduler"));
/// assert_eq!(role_for_program("km-fit"), Some("fit"));
/// assert_eq!(role_for_program("km"), None);
/// ```
pub fn role_for_program(program: &str) -> Option<&'static str> {
    ROLES.iter().find_map(|(role, aliases)| {
        let own = program.strip_prefix("km-") == Some(*role);
        (own || aliases.contains(&program)).then_some(*role)
    })
}

/// Rewrites argv so that `k8sm-scheduler --flag` reads as `km scheduler --flag`.
/// Arguments of a binary started as `km` (or any other name) are left alone.
pub fn normalize_args(mut args: Vec<OsString>) -> Vec<OsString> {
    let Some(argv0) = args.first() else {
        return vec!["km".into()];
    };
    let program = Path::new(argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(role) = role_for_program(&program) {
        args[0] = "km".into();
        args.insert(1, role.into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalize_args(args.iter().map(OsString::from).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn k8sm_names_select_their_roles() {
        assert_eq!(role_for_program("k8sm-scheduler"), Some("scheduler"));
        assert_eq!(role_for_program("k8sm-executor"), Some("executor"));
        assert_eq!(
            role_for_program("k8sm-controller-manager"),
            Some("controller-manager")
        );
        assert_eq!(role_for_program("k8sm-proxy"), Some("proxy"));
        assert_eq!(role_for_program("km-apiserver"), Some("apiserver"));
    }

    #[test]
    fn every_role_answers_to_km_dash_role() {
        for (role, _) in ROLES {
            assert_eq!(role_for_program(&format!("km-{role}")), Some(*role));
        }
        assert_eq!(role_for_program("km"), None);
        assert_eq!(role_for_program("km-nothing"), None);
        assert_eq!(role_for_program("k8sm-fit"), None);
    }

    #[test]
    fn argv0_becomes_the_role() {
        assert_eq!(
            norm(&["/usr/bin/k8sm-scheduler", "--mesos-master", "m:5050"]),
            ["km", "scheduler", "--mesos-master", "m:5050"]
        );
        assert_eq!(norm(&["./km-fit", "--help"]), ["km", "fit", "--help"]);
        assert_eq!(norm(&["/opt/km", "fit"]), ["/opt/km", "fit"]);
    }
}
