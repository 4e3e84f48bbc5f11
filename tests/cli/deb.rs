//! The Debian package: packaging/build-deb.sh run on the test binary, its
//! contents and control fields, its /etc/default files against the roles'
//! flags, `systemd-analyze verify` of its units, and a real `dpkg -i` on this
//! machine (root only) followed by `dpkg --purge`, which must leave nothing.
//!
//! Everything that touches the host runs in one test function, under a lock
//! file shared by every process that runs it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const UNITS: [&str; 6] = [
    "km-apiserver",
    "km-scheduler",
    "km-controller-manager",
    "km-proxy",
    "km-dev-master",
    "km-dev-agent",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?} could not run: {e}"))
}

/// Runs `cmd`, asserts it succeeded, returns stdout.
fn ok(cmd: &mut Command) -> String {
    let o = output(cmd);
    assert!(
        o.status.success(),
        "{cmd:?}: {}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().is_ok_and(|o| o.status.success())
}

fn have(tool: &str) -> bool {
    succeeds(Command::new("sh").args(["-c", &format!("command -v {tool}")]))
}

/// The names `make install` links to km (the Makefile's LINKS).
fn makefile_links() -> Vec<String> {
    let makefile = std::fs::read_to_string(repo().join("Makefile")).unwrap();
    let mut links = Vec::new();
    let mut lines = makefile.lines().skip_while(|l| !l.starts_with("LINKS :="));
    let mut line = lines.next().expect("LINKS := in the Makefile");
    line = line.trim_start_matches("LINKS :=");
    loop {
        let more = line.trim_end().ends_with('\\');
        links.extend(
            line.trim_end_matches('\\')
                .split_whitespace()
                .map(str::to_owned),
        );
        match lines.next() {
            Some(next) if more => line = next,
            _ => break,
        }
    }
    assert!(links.contains(&"k8sm-scheduler".to_owned()), "{links:?}");
    links
}

/// Whether the test binary has `role` (one lands in another branch first).
fn has_role(role: &str) -> bool {
    succeeds(Command::new(env!("CARGO_BIN_EXE_km")).args([role, "--help"]))
}

/// The value of `KEY="..."` in an /etc/default file.
fn default_value<'a>(file: &'a str, key: &str) -> Option<&'a str> {
    file.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches('"'))
}

/// Removes the package when dropped, so a failed assertion leaves no install behind.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "km"]).output();
    }
}

/// Why this machine must not get the package installed, if it must not.
fn host_install_refused() -> Option<String> {
    if !have("dpkg") || !have("systemd-analyze") {
        return Some("dpkg or systemd-analyze missing".into());
    }
    if ok(Command::new("id").arg("-u")).trim() != "0" {
        return Some("not root".into());
    }
    if succeeds(Command::new("dpkg-query").args(["-W", "km"])) {
        return Some("a km package is installed already; not touching it".into());
    }
    if succeeds(Command::new("getent").args(["passwd", "km"])) {
        return Some("a user km exists already; purging would remove it".into());
    }
    for path in ["/var/lib/km", "/usr/bin/km"] {
        if Path::new(path).exists() {
            return Some(format!(
                "{path} exists already; the package would take it over"
            ));
        }
    }
    None
}

/// `dpkg-deb -c` lines as (mode, path, symlink target).
fn listing(deb: &Path) -> Vec<(String, String, Option<String>)> {
    ok(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f[5].trim_start_matches('.').to_owned();
            let target = (f.get(6) == Some(&"->")).then(|| f[7].to_owned());
            (f[0].to_owned(), path, target)
        })
        .collect()
}

#[test]
fn debian_package_builds_installs_and_purges() {
    for tool in ["dpkg-deb", "dpkg-shlibdeps", "strip", "make"] {
        if !have(tool) {
            eprintln!("skipped: {tool} not found (Debian's dpkg-dev, binutils, make)");
            return;
        }
    }
    let lock = std::fs::File::create(std::env::temp_dir().join("km-deb-test.lock")).unwrap();
    lock.lock().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let stage = dir.path().join("stage");
    let built = ok(Command::new(repo().join("packaging/build-deb.sh"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_km"))
        .arg("--out-dir")
        .arg(dir.path().join("out"))
        .arg("--stage-dir")
        .arg(&stage)
        .arg("--fast"));
    let deb = PathBuf::from(built.trim());
    let arch = ok(Command::new("dpkg").arg("--print-architecture"));
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        deb.file_name().unwrap().to_string_lossy(),
        format!("km_{version}_{}.deb", arch.trim())
    );

    // Contents.
    let files = listing(&deb);
    let find = |path: &str| files.iter().find(|(_, p, _)| p == path);
    let (mode, _, _) = find("/usr/bin/km").expect("/usr/bin/km");
    assert_eq!(mode, "-rwxr-xr-x");
    let links = makefile_links();
    for link in &links {
        let (_, _, target) = find(&format!("/usr/bin/{link}")).unwrap_or_else(|| panic!("{link}"));
        assert_eq!(target.as_deref(), Some("km"), "{link}");
    }
    for unit in UNITS {
        let (mode, _, _) = find(&format!("/lib/systemd/system/{unit}.service"))
            .unwrap_or_else(|| panic!("{unit}.service"));
        assert_eq!(mode, "-rw-r--r--", "{unit}.service");
        assert!(find(&format!("/etc/default/{unit}")).is_some(), "{unit}");
    }
    for path in [
        "/usr/share/bash-completion/completions/km",
        "/usr/share/zsh/vendor-completions/_km",
        "/usr/share/fish/vendor_completions.d/km.fish",
        "/usr/share/doc/km/copyright",
        "/usr/share/man/man1/km.1.gz",
    ] {
        assert!(find(path).is_some(), "{path} missing");
    }
    let roles = [
        "fit",
        "apiserver",
        "scheduler",
        "executor",
        "controller-manager",
        "dev-master",
        "dev-agent",
    ];
    for role in roles {
        let page = format!("/usr/share/man/man1/km-{role}.1.gz");
        assert!(find(&page).is_some(), "{page} missing");
    }
    let (_, _, target) =
        find("/usr/share/man/man1/k8sm-scheduler.1.gz").expect("k8sm-scheduler(1)");
    assert_eq!(target.as_deref(), Some("km-scheduler.1.gz"));
    assert!(
        find("/usr/share/man/man1/km-man.1.gz").is_none(),
        "hidden `km man` got a page"
    );
    let bash =
        std::fs::read_to_string(stage.join("usr/share/bash-completion/completions/km")).unwrap();
    assert!(
        bash.contains("complete -F _km") && bash.contains("--mesos-master"),
        "{bash}"
    );

    // Control fields and conffiles.
    let field = |name: &str| {
        ok(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name))
            .trim()
            .to_owned()
    };
    assert_eq!(field("Package"), "km");
    assert_eq!(field("Version"), version);
    assert_eq!(field("Architecture"), arch.trim());
    assert!(
        field("Depends").contains("libc6 (>= "),
        "{}",
        field("Depends")
    );
    assert_eq!(field("Recommends"), "docker.io | docker-ce");
    assert_eq!(field("Suggests"), "kubectl");
    let conffiles: BTreeSet<String> = std::fs::read_to_string(stage.join("DEBIAN/conffiles"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = UNITS.iter().map(|u| format!("/etc/default/{u}")).collect();
    assert_eq!(conffiles, expected);

    // Each unit runs its role with the flags of its /etc/default file, and
    // those flags (set and commented) are flags of the role.
    let mut absent = Vec::new();
    for unit in UNITS {
        let role = unit.trim_start_matches("km-");
        let var = format!("KM_{}_ARGS", role.to_uppercase().replace('-', "_"));
        let text =
            std::fs::read_to_string(stage.join(format!("lib/systemd/system/{unit}.service")))
                .unwrap();
        assert!(
            text.contains(&format!("\nEnvironmentFile=-/etc/default/{unit}\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("\nExecStart=/usr/bin/km {role} ${var}\n")),
            "{text}"
        );
        assert!(text.contains("\nRestart=on-failure\n"), "{text}");
        let root = matches!(role, "proxy" | "dev-agent");
        assert_eq!(
            text.contains("\nUser=km\n"),
            !root,
            "{unit}: unprivileged unless it needs root"
        );
        if !has_role(role) {
            absent.push(unit);
            eprintln!(
                "note: this km has no `{role}` role yet; /etc/default/{unit} is not checked against it"
            );
            continue;
        }
        let defaults = std::fs::read_to_string(stage.join(format!("etc/default/{unit}"))).unwrap();
        let args = default_value(&defaults, &var).unwrap_or_else(|| panic!("{var} in {defaults}"));
        ok(Command::new(env!("CARGO_BIN_EXE_km"))
            .arg(role)
            .args(args.split_whitespace())
            .arg("--help"));
        let help = ok(Command::new(env!("CARGO_BIN_EXE_km")).args([role, "--help"]));
        for word in defaults.split(|c: char| c.is_whitespace() || c == '=' || c == '"') {
            if word.starts_with("--") && word.len() > 2 {
                let flag = word.trim_end_matches([',', '.', ')', '`']);
                assert!(
                    help.contains(flag),
                    "/etc/default/{unit} names {flag}, which `km {role}` lacks"
                );
            }
        }
    }

    if let Some(why) = host_install_refused() {
        eprintln!("skipped installing the package: {why}");
        return;
    }
    let installed = Installed;
    ok(Command::new("dpkg").arg("-i").arg(&deb));
    let help = ok(Command::new("/usr/bin/k8sm-scheduler").arg("--help"));
    assert!(help.contains("Usage: km scheduler"), "{help}");
    assert!(
        help.contains("Mesos framework that schedules Kubernetes pods"),
        "{help}"
    );
    if have("man") {
        let page = ok(Command::new("man").args(["-w", "km"]));
        assert_eq!(page.trim(), "/usr/share/man/man1/km.1.gz");
    }
    assert!(Path::new("/usr/share/man/man1/km-scheduler.1.gz").is_file());
    assert!(
        succeeds(Command::new("getent").args(["passwd", "km"])),
        "no user km"
    );

    let units: Vec<String> = UNITS
        .iter()
        .map(|u| format!("/lib/systemd/system/{u}.service"))
        .collect();
    let (present, missing): (Vec<&String>, Vec<&String>) = units
        .iter()
        .partition(|u| !absent.iter().any(|a| u.contains(&format!("/{a}."))));
    ok(Command::new("systemd-analyze").arg("verify").args(&present));
    if !missing.is_empty() {
        // Their roles (and man pages) are not in this binary yet.
        ok(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&missing));
    }

    // What purge must take away besides the package's files: state the
    // units made and an enabled unit's link.
    std::fs::create_dir_all("/var/lib/km/apiserver").unwrap();
    std::fs::write("/var/lib/km/apiserver/store.redb", "x").unwrap();
    let wants = Path::new("/etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(wants).unwrap();
    let enabled = wants.join("km-apiserver.service");
    std::os::unix::fs::symlink("/lib/systemd/system/km-apiserver.service", &enabled).unwrap();

    ok(Command::new("dpkg").args(["--purge", "km"]));
    drop(installed);
    assert!(
        !succeeds(Command::new("dpkg-query").args(["-W", "km"])),
        "km still known to dpkg"
    );
    let mut left: Vec<String> = [
        "/usr/bin/km",
        "/var/lib/km",
        "/usr/share/doc/km",
        "/usr/share/man/man1/km.1.gz",
    ]
    .iter()
    .map(|p| p.to_string())
    .chain(links.iter().map(|l| format!("/usr/bin/{l}")))
    .chain(units.iter().cloned())
    .chain(UNITS.iter().map(|u| format!("/etc/default/{u}")))
    .filter(|p| Path::new(p).exists())
    .collect();
    if enabled.symlink_metadata().is_ok() {
        left.push(enabled.display().to_string());
    }
    assert!(left.is_empty(), "left after purge: {left:?}");
    assert!(
        !succeeds(Command::new("getent").args(["passwd", "km"])),
        "user km left"
    );
    assert!(
        !succeeds(Command::new("getent").args(["group", "km"])),
        "group km left"
    );
}
