//! `cargo xtask deb`: the node as a Debian package for a gateway
//! (docs/gateway.md says how an operator installs and runs it).
//!
//! ```text
//! cargo xtask deb [--target aarch64-unknown-linux-gnu|x86_64-unknown-linux-gnu]
//!                 [--profile release|dev] [--binary PATH]
//! ```
//!
//! Builds `wallance` (the release profile for the machine xtask runs on by
//! default; `--binary` packages one already built instead, such as the dev
//! binary `cargo test` leaves, with no release build), strips its debug
//! info and writes `target/deb/wallance_<version>_<arch>.deb`
//! (`target/deb/dev/` for the dev profile), the version from the
//! workspace's Cargo.toml.
//!
//! The package is put together here from the text files in
//! `packaging/debian/` (unit, maintainer scripts, example config, control
//! template) and built with `dpkg-deb --build --root-owner-group`, not with
//! cargo-deb: dpkg-deb and binutils (strip, readelf) are on every Debian
//! machine that builds Rust, so packaging installs nothing on a fresh one.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const USAGE: &str = "usage: cargo xtask deb [--target aarch64-unknown-linux-gnu|x86_64-unknown-linux-gnu] \
                     [--profile release|dev] [--binary PATH]";

/// A target the package is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub triple: &'static str,
    /// Debian's name for the architecture.
    pub arch: &'static str,
    /// Prefix of Debian's cross tools (`aarch64-linux-gnu-gcc`, `-strip`).
    gnu: &'static str,
    /// The ELF header's `e_machine`.
    machine: u16,
}

pub const TARGETS: [Target; 2] = [
    Target {
        triple: "x86_64-unknown-linux-gnu",
        arch: "amd64",
        gnu: "x86_64-linux-gnu",
        machine: 62,
    },
    Target {
        triple: "aarch64-unknown-linux-gnu",
        arch: "arm64",
        gnu: "aarch64-linux-gnu",
        machine: 183,
    },
];

impl Target {
    fn by_triple(triple: &str) -> anyhow::Result<Self> {
        TARGETS
            .into_iter()
            .find(|t| t.triple == triple)
            .with_context(|| format!("no package for target {triple}\n{USAGE}"))
    }

    /// The machine xtask runs on.
    fn host() -> anyhow::Result<Self> {
        Self::by_triple(&format!("{}-unknown-linux-gnu", std::env::consts::ARCH))
    }

    fn is_host(&self) -> bool {
        self.triple.starts_with(std::env::consts::ARCH)
    }

    /// A binutils or gcc tool for this target: the native one, or
    /// Debian's cross tool (`aarch64-linux-gnu-strip`).
    fn tool(&self, name: &str) -> String {
        if self.is_host() {
            name.to_string()
        } else {
            format!("{}-{name}", self.gnu)
        }
    }

    fn machine_name(machine: u16) -> String {
        TARGETS
            .iter()
            .find(|t| t.machine == machine)
            .map_or_else(|| format!("ELF machine {machine}"), |t| t.triple.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Profile {
    Release,
    Dev,
}

#[derive(Debug)]
struct Args {
    target: Target,
    profile: Profile,
    binary: Option<PathBuf>,
}

fn parse_args(args: &[String]) -> anyhow::Result<Args> {
    let mut target = None;
    let mut profile = Profile::Release;
    let mut binary = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--target" => target = Some(Target::by_triple(value()?)?),
            "--profile" => {
                profile = match value()?.as_str() {
                    "release" => Profile::Release,
                    "dev" => Profile::Dev,
                    other => bail!("no profile {other:?}\n{USAGE}"),
                }
            }
            "--binary" => binary = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(Args {
        target: target.map_or_else(Target::host, Ok)?,
        profile,
        binary,
    })
}

/// Files copied from the repository into the package: source, place in
/// the package, mode. Owners are all root (`--root-owner-group`); the
/// user wallance and its folders are postinst's.
const FILES: [(&str, &str, u32); 8] = [
    (
        "packaging/debian/wallance.service",
        "lib/systemd/system/wallance.service",
        0o644,
    ),
    ("packaging/debian/node.toml", "etc/wallance/node.toml", 0o644),
    ("packaging/debian/copyright", "usr/share/doc/wallance/copyright", 0o644),
    ("docs/gateway.md", "usr/share/doc/wallance/gateway.md", 0o644),
    ("packaging/debian/conffiles", "DEBIAN/conffiles", 0o644),
    ("packaging/debian/postinst", "DEBIAN/postinst", 0o755),
    ("packaging/debian/prerm", "DEBIAN/prerm", 0o755),
    ("packaging/debian/postrm", "DEBIAN/postrm", 0o755),
];

/// Where the binary goes in the package.
const BINARY: &str = "usr/bin/wallance";

/// What [`build_package`] made.
#[derive(Debug)]
pub struct Built {
    pub deb: PathBuf,
    /// The binary as given, and as packaged (stripped or not).
    pub binary_bytes: u64,
    pub packaged_binary_bytes: u64,
    pub control: String,
}

/// Puts the package together from the repository at `root` and `binary`
/// (built for `target`) in `out_dir`; strips the binary's debug info with
/// the target's `strip` when `strip` is set.
pub fn build_package(root: &Path, target: Target, binary: &Path, strip: bool, out_dir: &Path) -> anyhow::Result<Built> {
    check_elf(binary, target)?;
    let version = debian_version(&workspace_version(
        &fs::read_to_string(root.join("Cargo.toml")).context("cannot read the workspace's Cargo.toml")?,
    )?);
    let name = format!("wallance_{version}_{}", target.arch);
    let stage = out_dir.join(&name);
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("cannot empty {}", stage.display()))?;
    }
    let place = |to: &str, mode: u32, from: &Path| -> anyhow::Result<PathBuf> {
        let dest = stage.join(to);
        fs::create_dir_all(dest.parent().context("a file in a folder")?)?;
        fs::copy(from, &dest).with_context(|| format!("cannot copy {} to {}", from.display(), dest.display()))?;
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
        Ok(dest)
    };
    for (from, to, mode) in FILES {
        place(to, mode, &root.join(from))?;
    }
    let packaged = place(BINARY, 0o755, binary)?;
    if strip {
        // Debug info only: the symbol table stays, so a panic's backtrace
        // still names its functions.
        let tool = target.tool("strip");
        super::run(&tool, &["--strip-debug", packaged.to_str().context("a UTF-8 path")?])?;
    }
    let depends = depends(&packaged)?;
    let control = fs::read_to_string(root.join("packaging/debian/control"))?
        .replace("@VERSION@", &version)
        .replace("@ARCH@", target.arch)
        .replace("@INSTALLED_SIZE@", &installed_kib(&stage)?.to_string())
        .replace("@DEPENDS@", &depends);
    if let Some(left) = control.split('@').skip(1).find(|w| is_placeholder(w)) {
        bail!("packaging/debian/control: @{left}@ is not filled in");
    }
    fs::write(stage.join("DEBIAN/control"), &control)?;
    fs::set_permissions(stage.join("DEBIAN/control"), fs::Permissions::from_mode(0o644))?;
    // Folders get 0755 whatever the umask of whoever builds.
    set_folder_modes(&stage)?;
    let deb = out_dir.join(format!("{name}.deb"));
    let (stage_s, deb_s) = (
        stage.to_str().context("a UTF-8 path")?,
        deb.to_str().context("a UTF-8 path")?,
    );
    super::captured(Command::new("dpkg-deb").args(["--root-owner-group", "--build", stage_s, deb_s]))?;
    let built = Built {
        deb,
        binary_bytes: fs::metadata(binary)?.len(),
        packaged_binary_bytes: fs::metadata(&packaged)?.len(),
        control,
    };
    fs::remove_dir_all(&stage)?;
    Ok(built)
}

/// `VERSION` in `@VERSION@`.
fn is_placeholder(word: &str) -> bool {
    !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase() || c == '_')
}

fn set_folder_modes(dir: &Path) -> anyhow::Result<()> {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            set_folder_modes(&entry.path())?;
        }
    }
    Ok(())
}

/// `Installed-Size`: KiB of the files outside DEBIAN/, each rounded up.
fn installed_kib(stage: &Path) -> anyhow::Result<u64> {
    fn walk(dir: &Path, total: &mut u64) -> anyhow::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name() == "DEBIAN" {
                continue;
            }
            let meta = entry.metadata()?;
            if meta.is_dir() {
                walk(&entry.path(), total)?;
            } else {
                *total += meta.len().div_ceil(1024);
            }
        }
        Ok(())
    }
    let mut total = 0;
    walk(stage, &mut total)?;
    Ok(total)
}

/// Refuses a file that is not a 64-bit little-endian ELF for `target`: a
/// package of the wrong architecture installs and then cannot start.
fn check_elf(binary: &Path, target: Target) -> anyhow::Result<()> {
    let mut head = [0u8; 20];
    fs::File::open(binary)
        .and_then(|mut f| f.read_exact(&mut head))
        .with_context(|| format!("cannot read {}", binary.display()))?;
    if &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        bail!("{} is not a 64-bit little-endian ELF executable", binary.display());
    }
    let machine = u16::from_le_bytes([head[18], head[19]]);
    if machine != target.machine {
        bail!(
            "{} is built for {}, not {}: build it with --target {} or package it with that --target",
            binary.display(),
            Target::machine_name(machine),
            target.triple,
            target.triple
        );
    }
    Ok(())
}

/// The workspace's version: `version` in `[workspace.package]`.
fn workspace_version(cargo_toml: &str) -> anyhow::Result<String> {
    let mut section = "";
    for line in cargo_toml.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[workspace.package]"
            && let Some((key, value)) = line.split_once('=')
            && key.trim() == "version"
        {
            return Ok(value.trim().trim_matches('"').to_string());
        }
    }
    bail!("Cargo.toml: no version in [workspace.package]")
}

/// Cargo's pre-release `0.2.0-rc.1` sorts before `0.2.0`; Debian writes
/// that `0.2.0~rc.1` (a `-` would start a Debian revision).
fn debian_version(cargo: &str) -> String {
    cargo.replacen('-', "~", 1)
}

/// The package's `Depends`: the libraries `binary` links (its NEEDED
/// entries, read with readelf), each as its Debian package at the newest
/// symbol version the binary asks of it, plus adduser for postinst.
fn depends(binary: &Path) -> anyhow::Result<String> {
    let out = Command::new("readelf")
        .env("LC_ALL", "C")
        .args(["--wide", "--dynamic", "--version-info"])
        .arg(binary)
        .output()
        .context("could not start readelf (Debian binutils)")?;
    if !out.status.success() {
        bail!(
            "readelf {} failed: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut depends = depends_from_readelf(&String::from_utf8_lossy(&out.stdout))?;
    depends.push("adduser".to_string());
    Ok(depends.join(", "))
}

/// The Debian package of a library a Rust binary for linux-gnu links, and
/// the prefix of its symbol versions.
fn package_of(library: &str) -> Option<(&'static str, &'static str)> {
    match library {
        "libc.so.6" | "libm.so.6" | "libpthread.so.0" | "libdl.so.2" | "librt.so.1" | "libutil.so.1" => {
            Some(("libc6", "GLIBC_"))
        }
        l if l.starts_with("ld-linux") => Some(("libc6", "GLIBC_")),
        "libgcc_s.so.1" => Some(("libgcc-s1", "GCC_")),
        _ => None,
    }
}

fn depends_from_readelf(text: &str) -> anyhow::Result<Vec<String>> {
    let mut packages: Vec<(&str, Option<Vec<u32>>)> = Vec::new();
    let mut need = |package: &'static str, version: Option<Vec<u32>>| {
        match packages.iter_mut().find(|(p, _)| *p == package) {
            Some((_, v)) => *v = (*v).clone().max(version),
            None => packages.push((package, version)),
        };
    };
    for line in text.lines() {
        if let Some(rest) = line.split_once("(NEEDED)").map(|(_, r)| r) {
            let library = rest
                .split_once('[')
                .and_then(|(_, r)| r.split_once(']'))
                .map(|(l, _)| l)
                .context("a NEEDED line readelf did not write as expected")?;
            let Some((package, _)) = package_of(library) else {
                bail!(
                    "the binary links {library}, whose Debian package xtask/src/deb.rs does not know: \
                     add it to package_of"
                );
            };
            need(package, None);
        }
    }
    // Version needs: "  000000: Version: 1  File: libc.so.6  Cnt: 7" then
    // "  0x0010:   Name: GLIBC_2.3  Flags: none  Version: 8" per version.
    let mut in_needs = false;
    let mut file: Option<(&'static str, &'static str)> = None;
    for line in text.lines() {
        if line.starts_with("Version needs section") {
            in_needs = true;
            continue;
        }
        if !line.starts_with(' ') {
            in_needs = false;
        }
        if !in_needs {
            continue;
        }
        let field = |name: &str| {
            line.split_once(name)
                .and_then(|(_, r)| r.split_whitespace().next())
                .map(str::to_string)
        };
        if let Some(f) = field("File:") {
            file = package_of(&f);
        } else if let (Some(name), Some((package, prefix))) = (field("Name:"), file)
            && let Some(version) = name.strip_prefix(prefix)
            && let Ok(parts) = version.split('.').map(str::parse).collect::<Result<Vec<u32>, _>>()
        {
            need(package, Some(parts));
        }
    }
    packages.sort();
    Ok(packages
        .into_iter()
        .map(|(package, version)| match version {
            Some(v) => {
                let v: Vec<String> = v.iter().map(u32::to_string).collect();
                format!("{package} (>= {})", v.join("."))
            }
            None => package.to_string(),
        })
        .collect())
}

/// Builds the binary with cargo and returns its path.
fn cargo_build(args: &Args) -> anyhow::Result<PathBuf> {
    let release = args.profile == Profile::Release;
    if !args.target.is_host() {
        if args.target.triple != super::AARCH64 {
            bail!(
                "xtask builds for {} only on such a machine: build there, or pass --binary",
                args.target.triple
            );
        }
        // What `cargo xtask cross-build` does: Debian's cross toolchain.
        return super::cross_build(release);
    }
    // The espresso contract is compiled into the binary (build.rs).
    super::run("rustup", &["target", "add", "wasm32-unknown-unknown"])?;
    let mut cargo = Command::new("cargo");
    cargo.args(["build", "-p", "wallance", "--bin", "wallance"]);
    if release {
        cargo.arg("--release");
    }
    super::timed(&mut cargo)?;
    Ok(super::target_dir()?
        .join(if release { "release" } else { "debug" })
        .join("wallance"))
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

pub fn main(args: &[String]) -> anyhow::Result<()> {
    let args = parse_args(args)?;
    let strip = args.target.tool("strip");
    let missing: Vec<String> = [
        ("dpkg-deb", "dpkg".to_string()),
        ("readelf", "binutils".to_string()),
        (
            strip.as_str(),
            if args.target.is_host() {
                "binutils".to_string()
            } else {
                format!("binutils-{}", args.target.gnu.replace('_', "-"))
            },
        ),
    ]
    .into_iter()
    .filter(|(tool, _)| !super::has(tool))
    .map(|(tool, package)| format!("{tool} (Debian {package})"))
    .collect();
    if !missing.is_empty() {
        bail!("cargo xtask deb needs: {}", missing.join(", "));
    }
    let binary = match &args.binary {
        Some(path) => path.clone(),
        None => cargo_build(&args)?,
    };
    let mut out_dir = super::target_dir()?.join("deb");
    if args.profile == Profile::Dev {
        out_dir.push("dev");
    }
    fs::create_dir_all(&out_dir)?;
    let root = super::tidy::repository_root();
    let built = build_package(&root, args.target, &binary, true, &out_dir)?;
    eprintln!(
        "{}: {} ({}); the binary {} as built, {} stripped of debug info",
        built.deb.display(),
        mb(fs::metadata(&built.deb)?.len()),
        built
            .control
            .lines()
            .find(|l| l.starts_with("Depends:"))
            .unwrap_or("no Depends"),
        mb(built.binary_bytes),
        mb(built.packaged_binary_bytes),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A fresh folder under the temporary folder, removed when dropped.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "xtask-deb-{}-{}-{name}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("a scratch folder");
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn root() -> PathBuf {
        crate::tidy::repository_root()
    }

    fn target(arch: &str) -> Target {
        TARGETS.into_iter().find(|t| t.arch == arch).expect("a known arch")
    }

    /// A tiny stand-in for the node, so the test never needs a build: the
    /// system's `true` (a real glibc executable, so readelf finds libc and
    /// its symbol versions) with an ELF header naming `target`'s machine.
    fn fake_binary(dir: &Path, target: Target) -> PathBuf {
        let mut bytes = fs::read("/bin/true")
            .or_else(|_| fs::read("/usr/bin/true"))
            .expect("coreutils' true");
        bytes[18..20].copy_from_slice(&target.machine.to_le_bytes());
        let path = dir.join(format!("wallance-{}", target.arch));
        fs::write(&path, bytes).expect("write the fake binary");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    fn package(dir: &Path, target: Target) -> Built {
        build_package(&root(), target, &fake_binary(dir, target), false, dir).expect("the package builds")
    }

    /// Runs a command that must succeed and returns its standard output.
    fn stdout_of(command: &mut Command) -> String {
        let out = command
            .output()
            .unwrap_or_else(|e| panic!("could not start {command:?}: {e}"));
        assert!(
            out.status.success(),
            "{command:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    fn workspace_debian_version() -> String {
        debian_version(&workspace_version(&fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap())
    }

    /// Every entry of the package with its mode; all owned by root.
    const CONTENTS: [(&str, &str); 16] = [
        ("./", "drwxr-xr-x"),
        ("./etc/", "drwxr-xr-x"),
        ("./etc/wallance/", "drwxr-xr-x"),
        ("./etc/wallance/node.toml", "-rw-r--r--"),
        ("./lib/", "drwxr-xr-x"),
        ("./lib/systemd/", "drwxr-xr-x"),
        ("./lib/systemd/system/", "drwxr-xr-x"),
        ("./lib/systemd/system/wallance.service", "-rw-r--r--"),
        ("./usr/", "drwxr-xr-x"),
        ("./usr/bin/", "drwxr-xr-x"),
        ("./usr/bin/wallance", "-rwxr-xr-x"),
        ("./usr/share/", "drwxr-xr-x"),
        ("./usr/share/doc/", "drwxr-xr-x"),
        ("./usr/share/doc/wallance/", "drwxr-xr-x"),
        ("./usr/share/doc/wallance/copyright", "-rw-r--r--"),
        ("./usr/share/doc/wallance/gateway.md", "-rw-r--r--"),
    ];

    #[test]
    fn the_package_holds_every_file_owned_by_root_with_its_mode() {
        let dir = Scratch::new("contents");
        for arch in ["amd64", "arm64"] {
            let built = package(&dir.0, target(arch));
            let listing = stdout_of(Command::new("dpkg-deb").arg("--contents").arg(&built.deb));
            let mut found = BTreeMap::new();
            for line in listing.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                assert!(fields.len() >= 6, "a dpkg-deb --contents line: {line}");
                assert_eq!(fields[1], "root/root", "{line}: every file belongs to root");
                found.insert(fields[5].to_string(), fields[0].to_string());
            }
            let expected: BTreeMap<String, String> =
                CONTENTS.iter().map(|(p, m)| (p.to_string(), m.to_string())).collect();
            assert_eq!(found, expected, "{arch}: the package's files and modes");
            // The binary is the one given, byte for byte (no strip asked).
            let tree = dir.0.join(format!("tree-{arch}"));
            stdout_of(Command::new("dpkg-deb").arg("--extract").arg(&built.deb).arg(&tree));
            assert_eq!(
                fs::read(tree.join(BINARY)).unwrap(),
                fs::read(fake_binary(&dir.0, target(arch))).unwrap()
            );
            assert_eq!(
                fs::read_to_string(tree.join("etc/wallance/node.toml")).unwrap(),
                fs::read_to_string(root().join("packaging/debian/node.toml")).unwrap()
            );
        }
    }

    fn control_fields(deb: &Path) -> BTreeMap<String, String> {
        let text = stdout_of(Command::new("dpkg-deb").arg("--field").arg(deb));
        let mut fields = BTreeMap::new();
        let mut last = String::new();
        for line in text.lines() {
            if let Some(more) = line.strip_prefix(' ') {
                let value: &mut String = fields.get_mut(&last).expect("a continuation follows a field");
                value.push('\n');
                value.push_str(more);
            } else {
                let (key, value) = line.split_once(':').expect("Field: value");
                last = key.to_string();
                fields.insert(last.clone(), value.trim().to_string());
            }
        }
        fields
    }

    #[test]
    fn control_fields_are_right_for_arm64_and_amd64() {
        let dir = Scratch::new("control");
        for arch in ["amd64", "arm64"] {
            let built = package(&dir.0, target(arch));
            let version = workspace_debian_version();
            assert_eq!(
                built.deb.file_name().unwrap().to_str().unwrap(),
                format!("wallance_{version}_{arch}.deb")
            );
            let f = control_fields(&built.deb);
            assert_eq!(f["Package"], "wallance");
            assert_eq!(f["Version"], version);
            assert_eq!(f["Architecture"], arch);
            assert!(f["Maintainer"].contains('<'), "{}", f["Maintainer"]);
            assert_eq!(f["Section"], "net");
            assert!(
                f["Description"].lines().count() > 3,
                "a synopsis and a long description"
            );
            // `true` links libc only; its newest symbol version is 2.x.
            let depends: Vec<&str> = f["Depends"].split(", ").collect();
            assert_eq!(depends.len(), 2, "{depends:?}");
            assert!(depends[0].starts_with("libc6 (>= 2."), "{depends:?}");
            assert_eq!(depends[1], "adduser", "postinst runs adduser");
            let kib: u64 = f["Installed-Size"].parse().expect("a number of KiB");
            assert!(kib >= fs::metadata(fake_binary(&dir.0, target(arch))).unwrap().len() / 1024);
            assert_eq!(
                f.keys().map(String::as_str).collect::<Vec<_>>(),
                [
                    "Architecture",
                    "Depends",
                    "Description",
                    "Installed-Size",
                    "Maintainer",
                    "Package",
                    "Priority",
                    "Section",
                    "Version"
                ]
            );
        }
    }

    /// `Key=value` settings of a unit's `[Service]` or `[Unit]` section,
    /// every value of a key repeated.
    fn unit_settings(unit: &str) -> BTreeMap<String, Vec<String>> {
        let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in unit.lines().map(str::trim) {
            if line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            if let Some((k, v)) = line.split_once('=') {
                settings.entry(k.to_string()).or_default().push(v.to_string());
            }
        }
        settings
    }

    fn toml_string(config: &str, key: &str) -> String {
        config
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim_start().strip_prefix('='))
            .unwrap_or_else(|| panic!("node.toml sets {key}"))
            .trim()
            .trim_matches('"')
            .to_string()
    }

    #[test]
    fn the_unit_passes_systemd_analyze_and_fits_the_config() {
        let dir = Scratch::new("unit");
        let built = package(&dir.0, target("arm64"));
        // A root holding the host's units (the targets the unit orders
        // itself after), then the package on top: verify also checks that
        // ExecStart's binary is there and executable.
        let tree = dir.0.join("tree");
        let units = ["/lib/systemd/system", "/usr/lib/systemd/system"]
            .into_iter()
            .find(|d| Path::new(d).join("multi-user.target").is_file())
            .expect("systemd's units (Debian package systemd): systemd-analyze needs them");
        fs::create_dir_all(tree.join("lib/systemd")).unwrap();
        stdout_of(
            Command::new("cp")
                .arg("-a")
                .arg(units)
                .arg(tree.join("lib/systemd/system")),
        );
        stdout_of(Command::new("dpkg-deb").arg("--extract").arg(&built.deb).arg(&tree));
        let out = Command::new("systemd-analyze")
            .env("SYSTEMD_LOG_COLOR", "0")
            .arg("verify")
            .arg(format!("--root={}", tree.display()))
            .arg("wallance.service")
            .output()
            .expect("systemd-analyze (Debian package systemd)");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A misspelt key or a bad value is only a warning: any output fails.
        assert!(
            out.status.success() && said.is_empty(),
            "systemd-analyze verify ({}):\n{said}",
            out.status
        );
        let security = stdout_of(
            Command::new("systemd-analyze")
                .args(["security", "--offline=yes", "--no-pager"])
                .arg(format!("--root={}", tree.display()))
                .arg("wallance.service"),
        );
        let exposure: f64 = security
            .lines()
            .find_map(|l| l.split_once("Overall exposure level for wallance.service: "))
            .and_then(|(_, r)| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("an exposure level in:\n{security}"));
        assert!(exposure <= 2.0, "exposure {exposure} (1.3 when written):\n{security}");

        let unit = fs::read_to_string(tree.join("lib/systemd/system/wallance.service")).unwrap();
        let s = unit_settings(&unit);
        let one = |k: &str| -> &str {
            match s.get(k).map(Vec::as_slice) {
                Some([v]) => v,
                other => panic!("{k}: {other:?}"),
            }
        };
        assert_eq!(one("User"), "wallance");
        assert_eq!(one("Type"), "simple", "the node does not call sd_notify");
        assert_eq!(one("NoNewPrivileges"), "yes");
        assert_eq!(one("ProtectSystem"), "strict");
        assert_eq!(one("Restart"), "on-failure");
        assert_eq!(one("CapabilityBoundingSet"), "");
        assert_eq!(
            one("RestrictAddressFamilies"),
            "AF_INET AF_INET6 AF_UNIX AF_NETLINK",
            "rustdds lists interfaces over netlink"
        );
        // wasmtime maps the code it compiles executable.
        assert!(!s.contains_key("MemoryDenyWriteExecute"), "contracts would not load");
        // The unit and the config it starts agree on every path.
        let exec: Vec<&str> = one("ExecStart").split_whitespace().collect();
        assert_eq!(exec[..3], ["/usr/bin/wallance", "node", "--config"]);
        let config_path = exec[3];
        let config = fs::read_to_string(tree.join(config_path.trim_start_matches('/'))).unwrap();
        let etc = Path::new(config_path).parent().unwrap();
        let data_dir = toml_string(&config, "data_dir");
        let contracts_dir = toml_string(&config, "contracts_dir");
        assert_eq!(one("ReadWritePaths"), data_dir);
        assert_eq!(one("ReadOnlyPaths"), contracts_dir);
        assert_eq!(
            s["ConditionPathExists"],
            [
                etc.join(toml_string(&config, "network")).display().to_string(),
                format!("{data_dir}/key")
            ]
        );
    }

    /// Every command the maintainer scripts run; the tests put a stub of
    /// each first and alone in PATH, so nothing real runs.
    const COMMANDS: [&str; 12] = [
        "getent",
        "addgroup",
        "adduser",
        "dpkg-statoverride",
        "install",
        "deb-systemd-helper",
        "deb-systemd-invoke",
        "systemctl",
        "rm",
        "rmdir",
        "deluser",
        "delgroup",
    ];

    /// The host a maintainer script runs on: what its `[ ... ]` tests
    /// find, under `root`.
    #[derive(Debug, Clone, Copy)]
    struct Host {
        /// systemd is running (/run/systemd/system).
        systemd: bool,
        /// The package was installed before (/var/lib/wallance/contracts).
        data: bool,
    }

    /// `script` with the absolute paths of its `[ ... ]` tests moved under
    /// `root`, so what it finds is the test's choice, not the machine's.
    fn hermetic(script: &str, root: &Path) -> String {
        let mut moved = 0;
        let mut out = String::new();
        for line in script.lines() {
            let mut rest = line;
            while let Some(a) = rest.find("[ ")
                && let Some(b) = rest[a..].find(" ]").map(|b| a + b)
            {
                let test = &rest[a..b];
                moved += test.matches(" /").count();
                out.push_str(&rest[..a]);
                out.push_str(&test.replace(" /", &format!(" {}/", root.display())));
                rest = &rest[b..];
            }
            out.push_str(rest);
            out.push('\n');
        }
        assert!(
            moved > 0,
            "a maintainer script that tests no path: is this still needed?"
        );
        out
    }

    /// Runs a maintainer script with stubs that log their arguments and
    /// exit with the code of the first `(command, arguments prefix, code)`
    /// that matches (0 otherwise), on `host`. Returns whether it succeeded
    /// and the log.
    fn run_script(
        dir: &Path,
        script: &str,
        args: &[&str],
        host: Host,
        codes: &[(&str, &str, i32)],
    ) -> (bool, Vec<String>) {
        static RUN: AtomicU32 = AtomicU32::new(0);
        let stubs = dir.join(format!("run-{}", RUN.fetch_add(1, Ordering::Relaxed)));
        let fake_root = stubs.join("root");
        fs::create_dir_all(fake_root.join("usr/bin")).unwrap();
        if host.systemd {
            fs::create_dir_all(fake_root.join("run/systemd/system")).unwrap();
        }
        if host.data {
            fs::create_dir_all(fake_root.join("var/lib/wallance/contracts")).unwrap();
        }
        // deb-systemd-helper is Essential on Debian (init-system-helpers).
        fs::write(fake_root.join("usr/bin/deb-systemd-helper"), "").unwrap();
        fs::set_permissions(
            fake_root.join("usr/bin/deb-systemd-helper"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let script_path = stubs.join(script);
        let text = fs::read_to_string(root().join("packaging/debian").join(script)).unwrap();
        fs::write(&script_path, hermetic(&text, &fake_root)).unwrap();
        let log = stubs.join("log");
        for command in COMMANDS {
            let mut text = format!("#!/bin/sh\nprintf '%s\\n' \"{command} $*\" >> \"$STUB_LOG\"\ncase \"$*\" in\n");
            for (_, prefix, code) in codes.iter().filter(|(c, _, _)| *c == command) {
                text.push_str(&format!("\"{prefix}\"*) exit {code} ;;\n"));
            }
            text.push_str("esac\nexit 0\n");
            let path = stubs.join(command);
            fs::write(&path, text).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        let status = Command::new("/bin/sh")
            .arg(&script_path)
            .args(args)
            .env_clear()
            .env("PATH", &stubs)
            .env("STUB_LOG", &log)
            .status()
            .expect("sh");
        let lines = fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        (status.success(), lines)
    }

    fn lines(l: &[&str]) -> Vec<String> {
        l.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn maintainer_scripts_are_shell_and_executable_and_conffiles_are_the_config() {
        let dir = Scratch::new("scripts");
        let built = package(&dir.0, target("amd64"));
        let control = dir.0.join("control");
        stdout_of(Command::new("dpkg-deb").arg("--control").arg(&built.deb).arg(&control));
        // Modes as packaged (extracting applies the umask).
        let tar = stdout_of(Command::new("sh").arg("-c").arg(format!(
            "dpkg-deb --ctrl-tarfile '{}' | tar -tvf -",
            built.deb.display()
        )));
        let modes: BTreeMap<&str, (&str, &str)> = tar
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((*f.get(5)?, (f[0], f[1])))
            })
            .collect();
        let expected: BTreeMap<&str, (&str, &str)> = [
            ("./", "drwxr-xr-x"),
            ("./conffiles", "-rw-r--r--"),
            ("./control", "-rw-r--r--"),
            ("./postinst", "-rwxr-xr-x"),
            ("./postrm", "-rwxr-xr-x"),
            ("./prerm", "-rwxr-xr-x"),
        ]
        .into_iter()
        .map(|(p, m)| (p, (m, "root/root")))
        .collect();
        assert_eq!(modes, expected);
        for script in ["postinst", "prerm", "postrm"] {
            let path = control.join(script);
            let text = fs::read_to_string(&path).unwrap();
            assert!(text.starts_with("#!/bin/sh\n"), "{script}");
            assert!(text.contains("\nset -e\n"), "{script} stops at the first failure");
            stdout_of(Command::new("sh").arg("-n").arg(&path));
        }
        let conffiles = fs::read_to_string(control.join("conffiles")).unwrap();
        let listing = stdout_of(Command::new("dpkg-deb").arg("--contents").arg(&built.deb));
        let etc: Vec<&str> = listing
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5)?.strip_prefix('.'))
            .filter(|p| p.starts_with("/etc/") && !p.ends_with('/'))
            .collect();
        assert_eq!(
            conffiles.lines().collect::<Vec<_>>(),
            etc,
            "every file in /etc is a conffile"
        );
    }

    const FRESH: Host = Host {
        systemd: true,
        data: false,
    };

    #[test]
    fn postinst_creates_the_user_and_the_folders_with_the_permission_model() {
        let dir = Scratch::new("postinst");
        let unit_enabled_and_started = lines(&[
            "deb-systemd-helper --quiet was-enabled wallance.service",
            "deb-systemd-helper enable wallance.service",
            "systemctl --system daemon-reload",
            "deb-systemd-invoke start wallance.service",
        ]);
        // First installation: no user, group, stat override or folder yet.
        let first = [("getent", "", 2), ("dpkg-statoverride", "--list", 1)];
        let (ok, log) = run_script(&dir.0, "postinst", &["configure"], FRESH, &first);
        assert!(ok, "{log:?}");
        let created = lines(&[
            "getent group wallance",
            "addgroup --system --quiet wallance",
            "getent passwd wallance",
            "adduser --system --quiet --ingroup wallance --home /var/lib/wallance --no-create-home \
             --shell /usr/sbin/nologin wallance",
            "dpkg-statoverride --list /etc/wallance/node.toml",
            "dpkg-statoverride --update --add root wallance 0640 /etc/wallance/node.toml",
            "install -d -o wallance -g wallance -m 0750 /var/lib/wallance",
            "install -d -o root -g wallance -m 2775 /var/lib/wallance/contracts",
        ]);
        assert_eq!(log, [created.clone(), unit_enabled_and_started.clone()].concat());

        // Without systemd running (a chroot, an image being built): the
        // unit is enabled for the next boot, nothing is started.
        let no_systemd = Host {
            systemd: false,
            ..FRESH
        };
        let (ok, log) = run_script(&dir.0, "postinst", &["configure"], no_systemd, &first);
        assert!(ok, "{log:?}");
        assert_eq!(log, [created, unit_enabled_and_started[..2].to_vec()].concat());

        // An upgrade: everything is there, and the administrator disabled
        // the unit: nothing is created again and the unit stays disabled.
        let upgrade = Host { data: true, ..FRESH };
        let disabled = [("deb-systemd-helper", "--quiet was-enabled", 1)];
        let (ok, log) = run_script(&dir.0, "postinst", &["configure", "0.0.9"], upgrade, &disabled);
        assert!(ok, "{log:?}");
        assert_eq!(
            log,
            lines(&[
                "getent group wallance",
                "getent passwd wallance",
                "dpkg-statoverride --list /etc/wallance/node.toml",
                "deb-systemd-helper --quiet was-enabled wallance.service",
                "deb-systemd-helper update-state wallance.service",
                "systemctl --system daemon-reload",
                "deb-systemd-invoke restart wallance.service",
            ])
        );

        // A failure stops the installation instead of leaving a node
        // without its user.
        let adduser_fails = [("getent", "", 2), ("adduser", "", 1)];
        let (ok, log) = run_script(&dir.0, "postinst", &["configure"], FRESH, &adduser_fails);
        assert!(!ok, "postinst went on after adduser failed: {log:?}");
        assert!(log.last().is_some_and(|l| l.starts_with("adduser ")), "{log:?}");
    }

    #[test]
    fn remove_keeps_the_node_and_purge_deletes_it() {
        let dir = Scratch::new("postrm");
        let installed = Host {
            systemd: true,
            data: true,
        };
        let (ok, log) = run_script(&dir.0, "prerm", &["remove"], installed, &[]);
        assert!(ok);
        assert_eq!(log, ["deb-systemd-invoke stop wallance.service"]);
        let (ok, log) = run_script(&dir.0, "prerm", &["upgrade", "0.2.0"], installed, &[]);
        assert!(ok);
        assert_eq!(log, Vec::<String>::new(), "an upgrade restarts the node in postinst");
        let no_systemd = Host {
            systemd: false,
            data: true,
        };
        let (ok, log) = run_script(&dir.0, "prerm", &["remove"], no_systemd, &[]);
        assert!(ok);
        assert_eq!(log, Vec::<String>::new());

        let (ok, log) = run_script(&dir.0, "postrm", &["remove"], installed, &[]);
        assert!(ok);
        assert_eq!(
            log,
            ["systemctl --system daemon-reload"],
            "remove leaves the key, the store, the contracts and the user"
        );

        let (ok, log) = run_script(&dir.0, "postrm", &["purge"], installed, &[]);
        assert!(ok);
        assert_eq!(
            log,
            [
                "deb-systemd-helper purge wallance.service",
                "dpkg-statoverride --list /etc/wallance/node.toml",
                "dpkg-statoverride --remove /etc/wallance/node.toml",
                "rm -rf /var/lib/wallance",
                "rm -f /etc/wallance/network.toml",
                "rmdir --ignore-fail-on-non-empty /etc/wallance",
                "getent passwd wallance",
                "deluser --system --quiet wallance",
                "getent group wallance",
                "delgroup --system --quiet wallance",
            ]
        );
    }

    /// The names of the fields of `pub struct name` in Rust source.
    fn struct_fields(source: &str, name: &str) -> Vec<String> {
        let start = source
            .find(&format!("pub struct {name} {{"))
            .unwrap_or_else(|| panic!("pub struct {name}"));
        let body = &source[start..];
        body[..body.find("\n}").expect("the struct's end")]
            .lines()
            .filter_map(|l| Some(l.trim().strip_prefix("pub ")?.split_once(':')?.0.to_string()))
            .collect()
    }

    /// The settings of the example `node.toml`, set or commented out
    /// (`#name = ...`), by table: "" (the top), "sensor", "store",
    /// "devices".
    fn example_settings(example: &str) -> BTreeMap<String, Vec<String>> {
        let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut table = String::new();
        for line in example.lines() {
            // "# prose" is a comment; "#name = ..." and "#[[devices]]" are settings.
            let line = match line.strip_prefix('#') {
                Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => rest,
                Some(_) => continue,
                None => line,
            };
            if let Some(name) = line.strip_prefix('[') {
                table = name.trim_matches(|c| c == '[' || c == ']').to_string();
                settings.entry(String::new()).or_default().push(table.clone());
            } else if let Some((key, _)) = line.split_once('=') {
                settings.entry(table.clone()).or_default().push(key.trim().to_string());
            } else {
                assert!(line.trim().is_empty(), "neither a comment nor a setting: {line}");
            }
        }
        settings
    }

    #[test]
    fn the_example_config_names_every_setting_of_the_node_and_no_other() {
        let example = fs::read_to_string(root().join("packaging/debian/node.toml")).unwrap();
        let config = fs::read_to_string(root().join("host/node/src/config.rs")).unwrap();
        let devices = fs::read_to_string(root().join("host/runtime/src/devices.rs")).unwrap();
        let settings = example_settings(&example);
        let sorted = |mut v: Vec<String>| {
            v.sort();
            v.dedup();
            v
        };
        assert_eq!(
            sorted(settings[""].clone()),
            sorted(struct_fields(&config, "NodeConfig")),
            "node.toml's settings are NodeConfig's (host/node/src/config.rs)"
        );
        assert_eq!(
            sorted(settings["sensor"].clone()),
            sorted(struct_fields(&config, "SensorConfig"))
        );
        assert_eq!(
            sorted(settings["store"].clone()),
            sorted(struct_fields(&config, "StoreConfig"))
        );
        // A device: DeviceConfig's fields, its kind (the serde tag) and the
        // fields of the kind shown (SimulatedKind::EspressoMachine).
        let kind_fields = {
            let start = devices.find("EspressoMachine {").expect("the espresso-machine kind");
            let body = &devices[start..start + devices[start..].find('}').unwrap()];
            body.split([',', '{'])
                .filter_map(|f| Some(f.split_once(':')?.0.trim().to_string()))
                .collect::<Vec<_>>()
        };
        let mut device = struct_fields(&devices, "DeviceConfig");
        device.retain(|f| f != "kind");
        device.push("kind".to_string());
        device.extend(kind_fields);
        assert_eq!(sorted(settings["devices"].clone()), sorted(device));
        assert!(
            config.contains("#[serde(deny_unknown_fields)]\npub struct NodeConfig"),
            "the node refuses unknown settings, so a wrong example fails loudly"
        );
    }

    #[test]
    fn a_binary_for_another_machine_is_refused() {
        let dir = Scratch::new("refused");
        let amd64 = fake_binary(&dir.0, target("amd64"));
        let err = build_package(&root(), target("arm64"), &amd64, false, &dir.0)
            .expect_err("an x86-64 binary in an arm64 package");
        assert!(
            err.to_string()
                .contains("is built for x86_64-unknown-linux-gnu, not aarch64-unknown-linux-gnu"),
            "{err}"
        );
        let text = dir.0.join("script");
        fs::write(&text, "#!/bin/sh\necho hello\n").unwrap();
        let err = build_package(&root(), target("amd64"), &text, false, &dir.0).expect_err("a shell script");
        assert!(err.to_string().contains("not a 64-bit little-endian ELF"), "{err}");
        assert!(
            !dir.0
                .join(format!("wallance_{}_arm64.deb", workspace_debian_version()))
                .exists(),
            "no package"
        );
    }

    #[test]
    fn depends_are_the_newest_symbol_versions_of_each_library() {
        let readelf = "
Dynamic section at offset 0x7dd8 contains 26 entries:
  Tag        Type                         Name/Value
 0x0000000000000001 (NEEDED)             Shared library: [libgcc_s.so.1]
 0x0000000000000001 (NEEDED)             Shared library: [libc.so.6]
 0x0000000000000001 (NEEDED)             Shared library: [ld-linux-aarch64.so.1]

Version symbols section '.gnu.version' contains 3 entries:
 Addr: 0x0000000000000b76  Offset: 0x00000b76  Link: 6 (.dynsym)
  000:   0 (*local*)       2 (GLIBC_2.99)   3 (GLIBC_2.34)

Version needs section '.gnu.version_r' contains 3 entries:
 Addr: 0x0000000000000be0  Offset: 0x00000be0  Link: 7 (.dynstr)
  000000: Version: 1  File: libgcc_s.so.1  Cnt: 2
  0x0010:   Name: GCC_4.2.0  Flags: none  Version: 9
  0x0020:   Name: GCC_3.0  Flags: none  Version: 8
  0x0030: Version: 1  File: libc.so.6  Cnt: 3
  0x0040:   Name: GLIBC_2.3.4  Flags: none  Version: 7
  0x0050:   Name: GLIBC_2.34  Flags: none  Version: 3
  0x0060:   Name: GLIBC_2.17  Flags: none  Version: 2
  0x0070: Version: 1  File: ld-linux-aarch64.so.1  Cnt: 1
  0x0080:   Name: GLIBC_2.17  Flags: none  Version: 6
";
        assert_eq!(
            depends_from_readelf(readelf).unwrap(),
            ["libc6 (>= 2.34)", "libgcc-s1 (>= 4.2.0)"],
            "2.99 is in the symbol table, not asked of a library; 2.34 > 2.3.4 > 2.17"
        );
        let err = depends_from_readelf(" 0x01 (NEEDED)             Shared library: [libssl.so.3]\n").unwrap_err();
        assert!(err.to_string().contains("libssl.so.3"), "{err}");
    }

    #[test]
    fn the_version_is_the_workspaces() {
        let toml = "[workspace]\nmembers = []\n\n[workspace.package]\nedition = \"2024\"\nversion = \"1.2.3-rc.1\"\n\n[dependencies]\nversion = \"9\"\n";
        assert_eq!(workspace_version(toml).unwrap(), "1.2.3-rc.1");
        assert_eq!(debian_version("1.2.3-rc.1"), "1.2.3~rc.1");
        assert!(workspace_version("[package]\nversion = \"1.0.0\"\n").is_err());
    }

    #[test]
    fn arguments_choose_the_target_and_profile() {
        let a = |s: &[&str]| parse_args(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        let host = a(&[]).unwrap();
        assert!(host.target.is_host());
        assert_eq!(host.profile, Profile::Release);
        let cross = a(&[
            "--target",
            "aarch64-unknown-linux-gnu",
            "--profile",
            "dev",
            "--binary",
            "x",
        ])
        .unwrap();
        assert_eq!((cross.target.arch, cross.profile), ("arm64", Profile::Dev));
        assert_eq!(cross.binary, Some(PathBuf::from("x")));
        assert_eq!(target("arm64").tool("strip"), "aarch64-linux-gnu-strip");
        assert!(a(&["--target", "riscv64gc-unknown-linux-gnu"]).is_err());
        assert!(a(&["--profile", "bench"]).is_err());
        assert!(a(&["--binary"]).is_err());
    }
}
