//! The WIT package as an artifact.
//!
//! ```text
//! cargo run -p wit-package -- check    # CI: encode, check the version lock and docs/wit.md
//! cargo run -p wit-package -- record   # after changing wit/: re-record the lock, regenerate docs
//! ```
//!
//! `check` writes `target/wit/<namespace>-<name>-<version>.wasm` (`$CARGO_TARGET_DIR/wit/` when
//! that is set, a relative value taken from the workspace root; the package encoded as a
//! WebAssembly component, what `wasm-tools component wit --wasm wit/` makes), then fails when
//! the WIT text differs from the one recorded in `wit/VERSION-LOCK` or `docs/wit.md` is stale.
//! `record` refuses to record a changed WIT under an unchanged version: any change to the
//! package (types, functions, docs, worlds) needs a new version in its `package` line.
//!
//! "The WIT text" is the package as `wit-component` prints it (comments that are not doc
//! comments and formatting do not count; doc comments do), hashed with SHA-256.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use wit_parser::{
    Docs, Function, FunctionKind, InterfaceId, PackageId, Resolve, Type, TypeDefKind, TypeId,
    TypeOwner,
};

const RECORD_COMMAND: &str = "cargo run -p wit-package -- record";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

struct Package {
    resolve: Resolve,
    id: PackageId,
}

impl Package {
    fn load(root: &Path) -> Result<Package> {
        let mut resolve = Resolve::default();
        let (id, _) = resolve
            .push_dir(root.join("wit"))
            .context("parse the WIT package in wit/")?;
        Ok(Package { resolve, id })
    }

    fn name(&self) -> String {
        self.resolve.packages[self.id].name.to_string()
    }

    fn version(&self) -> Result<String> {
        match &self.resolve.packages[self.id].name.version {
            Some(v) => Ok(v.to_string()),
            None => bail!("wit/: the package has no version (`package ns:name@x.y.z;`)"),
        }
    }

    /// The normalised WIT text: what `wit-component` prints for the package, docs included.
    fn text(&self) -> Result<String> {
        let mut printer = wit_component::WitPrinter::default();
        printer.print(&self.resolve, self.id, &[])?;
        Ok(printer.output.to_string())
    }

    fn hash(&self) -> Result<String> {
        let digest = Sha256::digest(self.text()?.as_bytes());
        Ok(digest.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        }))
    }

    fn artifact_name(&self) -> Result<String> {
        let name = &self.resolve.packages[self.id].name;
        Ok(format!(
            "{}-{}-{}.wasm",
            name.namespace,
            name.name,
            self.version()?
        ))
    }
}

/// `wit/VERSION-LOCK`: the package name with its version, and the hash of its text.
fn lock_text(pkg: &Package) -> Result<String> {
    Ok(format!(
        "# Written by `{RECORD_COMMAND}`; checked by CI (`cargo run -p wit-package -- check`).\n\
         # Any change to wit/ needs a new package version, then that command.\n\
         package {}\nsha256 {}\n",
        pkg.name(),
        pkg.hash()?
    ))
}

fn read_lock(root: &Path) -> Result<(String, String)> {
    let path = root.join("wit/VERSION-LOCK");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).map(str::trim).map(str::to_owned))
            .with_context(|| format!("{}: no `{key}` line", path.display()))
    };
    Ok((field("package ")?, field("sha256 ")?))
}

fn check(root: &Path) -> Result<Vec<String>> {
    let pkg = Package::load(root)?;
    let mut problems = Vec::new();

    let bytes = wit_component::encode(&pkg.resolve, pkg.id, true)
        .context("encode the WIT package as wasm")?;
    // The artifact must decode back to the same package.
    match wit_component::decode(&bytes).context("decode the encoded package")? {
        wit_component::DecodedWasm::WitPackage(..) => {}
        wit_component::DecodedWasm::Component(..) => bail!("the encoding is not a WIT package"),
    }
    let out_dir = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| root.join("target"), |dir| root.join(dir))
        .join("wit");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join(pkg.artifact_name()?);
    std::fs::write(&out, &bytes).with_context(|| format!("write {}", out.display()))?;
    eprintln!("wrote {} ({} bytes)", out.display(), bytes.len());

    let (locked_name, locked_hash) = read_lock(root)?;
    let (name, hash) = (pkg.name(), pkg.hash()?);
    if hash != locked_hash {
        if name == locked_name {
            problems.push(format!(
                "wit/ changed but the package version did not: bump the version in the `package` \
                 line of wit/connector.wit (now {name}), then run `{RECORD_COMMAND}`"
            ));
        } else {
            problems.push(format!(
                "wit/ changed and its version is now {name} (recorded: {locked_name}): run \
                 `{RECORD_COMMAND}` to record it"
            ));
        }
    } else if name != locked_name {
        problems.push(format!(
            "wit/VERSION-LOCK records {locked_name} but the package is {name}: run `{RECORD_COMMAND}`"
        ));
    }

    let docs_path = root.join("docs/wit.md");
    let docs = render_docs(&pkg)?;
    match std::fs::read_to_string(&docs_path) {
        Ok(current) if current == docs => {}
        Ok(_) => problems.push(format!(
            "docs/wit.md is out of date with wit/: run `{RECORD_COMMAND}`"
        )),
        Err(e) => problems.push(format!("read docs/wit.md: {e}")),
    }
    Ok(problems)
}

fn record(root: &Path) -> Result<()> {
    let pkg = Package::load(root)?;
    let hash = pkg.hash()?;
    if let Ok((locked_name, locked_hash)) = read_lock(root)
        && locked_name == pkg.name()
        && locked_hash != hash
    {
        bail!(
            "wit/ changed but the package version is still {locked_name}: bump the version in \
             the `package` line of wit/connector.wit first"
        );
    }
    std::fs::write(root.join("wit/VERSION-LOCK"), lock_text(&pkg)?)?;
    std::fs::write(root.join("docs/wit.md"), render_docs(&pkg)?)?;
    eprintln!(
        "recorded {} (sha256 {hash}) in wit/VERSION-LOCK and regenerated docs/wit.md",
        pkg.name()
    );
    Ok(())
}

// ---- Markdown --------------------------------------------------------------------------------

fn docs_of(docs: &Docs) -> String {
    docs.contents.as_deref().unwrap_or("").trim().to_owned()
}

/// A doc text on one line, for table cells.
fn cell(docs: &Docs) -> String {
    docs_of(docs)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

fn type_name(resolve: &Resolve, ty: &Type) -> String {
    match ty {
        Type::Bool => "bool".into(),
        Type::U8 => "u8".into(),
        Type::U16 => "u16".into(),
        Type::U32 => "u32".into(),
        Type::U64 => "u64".into(),
        Type::S8 => "s8".into(),
        Type::S16 => "s16".into(),
        Type::S32 => "s32".into(),
        Type::S64 => "s64".into(),
        Type::F32 => "f32".into(),
        Type::F64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::ErrorContext => "error-context".into(),
        Type::Id(id) => type_id_name(resolve, *id),
    }
}

fn opt_type_name(resolve: &Resolve, ty: Option<&Type>) -> String {
    ty.map_or("_".into(), |t| type_name(resolve, t))
}

fn type_id_name(resolve: &Resolve, id: TypeId) -> String {
    let def = &resolve.types[id];
    if let Some(name) = &def.name {
        return name.clone();
    }
    match &def.kind {
        TypeDefKind::List(t) => format!("list<{}>", type_name(resolve, t)),
        TypeDefKind::Option(t) => format!("option<{}>", type_name(resolve, t)),
        TypeDefKind::Result(r) => match (&r.ok, &r.err) {
            (None, None) => "result".into(),
            (ok, err) => format!(
                "result<{}, {}>",
                opt_type_name(resolve, ok.as_ref()),
                opt_type_name(resolve, err.as_ref())
            ),
        },
        TypeDefKind::Tuple(t) => format!(
            "tuple<{}>",
            t.types
                .iter()
                .map(|t| type_name(resolve, t))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        TypeDefKind::Handle(wit_parser::Handle::Own(r)) => type_id_name(resolve, *r),
        TypeDefKind::Handle(wit_parser::Handle::Borrow(r)) => {
            format!("borrow<{}>", type_id_name(resolve, *r))
        }
        TypeDefKind::Type(t) => type_name(resolve, t),
        other => format!("{other:?}"),
    }
}

fn signature(resolve: &Resolve, f: &Function) -> String {
    let params = f
        .params
        .iter()
        .filter(|p| !(p.name == "self" && matches!(f.kind, FunctionKind::Method(_))))
        .map(|p| format!("{}: {}", p.name, type_name(resolve, &p.ty)))
        .collect::<Vec<_>>()
        .join(", ");
    let name = f.item_name();
    match (&f.kind, &f.result) {
        (FunctionKind::Constructor(_), _) => format!("constructor({params})"),
        (_, Some(result)) => format!("{name}: func({params}) -> {}", type_name(resolve, result)),
        (_, None) => format!("{name}: func({params})"),
    }
}

fn render_type(out: &mut String, resolve: &Resolve, iface: InterfaceId, name: &str, id: TypeId) {
    let def = &resolve.types[id];
    // `use`d types belong to the interface that defines them.
    if def.owner != TypeOwner::Interface(iface) {
        return;
    }
    let kind = match &def.kind {
        TypeDefKind::Record(_) => "record",
        TypeDefKind::Variant(_) => "variant",
        TypeDefKind::Enum(_) => "enum",
        TypeDefKind::Flags(_) => "flags",
        TypeDefKind::Resource => "resource",
        _ => "type",
    };
    let _ = writeln!(out, "### {kind} `{name}`\n");
    let docs = docs_of(&def.docs);
    if !docs.is_empty() {
        let _ = writeln!(out, "{docs}\n");
    }
    let rows: Vec<(String, String, String)> = match &def.kind {
        TypeDefKind::Record(r) => r
            .fields
            .iter()
            .map(|f| (f.name.clone(), type_name(resolve, &f.ty), cell(&f.docs)))
            .collect(),
        TypeDefKind::Variant(v) => v
            .cases
            .iter()
            .map(|c| {
                let ty =
                    c.ty.as_ref()
                        .map_or(String::new(), |t| type_name(resolve, t));
                (c.name.clone(), ty, cell(&c.docs))
            })
            .collect(),
        TypeDefKind::Enum(e) => e
            .cases
            .iter()
            .map(|c| (c.name.clone(), String::new(), cell(&c.docs)))
            .collect(),
        TypeDefKind::Flags(f) => f
            .flags
            .iter()
            .map(|c| (c.name.clone(), String::new(), cell(&c.docs)))
            .collect(),
        TypeDefKind::Resource => Vec::new(),
        _ => {
            let _ = writeln!(out, "`type {name} = {}`\n", type_id_name(resolve, id));
            Vec::new()
        }
    };
    if !rows.is_empty() {
        let with_types = rows.iter().any(|(_, t, _)| !t.is_empty());
        if with_types {
            let _ = writeln!(out, "| name | type | description |\n|---|---|---|");
        } else {
            let _ = writeln!(out, "| name | description |\n|---|---|");
        }
        for (n, t, d) in rows {
            if with_types {
                let t = if t.is_empty() {
                    "–".into()
                } else {
                    format!("`{t}`")
                };
                let _ = writeln!(out, "| `{n}` | {t} | {d} |");
            } else {
                let _ = writeln!(out, "| `{n}` | {d} |");
            }
        }
        out.push('\n');
    }
    if matches!(def.kind, TypeDefKind::Resource) {
        let iface = &resolve.interfaces[iface];
        for f in iface.functions.values() {
            let owner = match f.kind {
                FunctionKind::Method(r)
                | FunctionKind::Static(r)
                | FunctionKind::Constructor(r) => Some(r),
                _ => None,
            };
            if owner == Some(id) {
                render_function(out, resolve, f, "####");
            }
        }
    }
}

fn render_function(out: &mut String, resolve: &Resolve, f: &Function, level: &str) {
    let _ = writeln!(out, "{level} `{}`\n", f.item_name());
    let _ = writeln!(out, "```wit\n{}\n```\n", signature(resolve, f));
    let docs = docs_of(&f.docs);
    if !docs.is_empty() {
        let _ = writeln!(out, "{docs}\n");
    }
}

fn render_docs(pkg: &Package) -> Result<String> {
    let resolve = &pkg.resolve;
    let package = &resolve.packages[pkg.id];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- Generated from wit/ by `{RECORD_COMMAND}`; do not edit. -->\n\n# WIT package `{}`\n",
        pkg.name()
    );
    let docs = docs_of(&package.docs);
    if !docs.is_empty() {
        let _ = writeln!(out, "{docs}\n");
    }
    let _ = writeln!(
        out,
        "Encoded as a WIT package (wasm) by `cargo run -p wit-package -- check` into \
         `target/wit/{}`.\n",
        pkg.artifact_name()?
    );
    for (name, world_id) in &package.worlds {
        let world = &resolve.worlds[*world_id];
        let _ = writeln!(out, "## world `{name}`\n");
        let docs = docs_of(&world.docs);
        if !docs.is_empty() {
            let _ = writeln!(out, "{docs}\n");
        }
        for (direction, items) in [("import", &world.imports), ("export", &world.exports)] {
            for key in items.keys() {
                let _ = writeln!(out, "- {direction} `{}`", resolve.name_world_key(key));
            }
        }
        out.push('\n');
    }
    for (name, iface_id) in &package.interfaces {
        let iface = &resolve.interfaces[*iface_id];
        let _ = writeln!(out, "## interface `{name}`\n");
        let docs = docs_of(&iface.docs);
        if !docs.is_empty() {
            let _ = writeln!(out, "{docs}\n");
        }
        for (type_name, id) in &iface.types {
            render_type(&mut out, resolve, *iface_id, type_name, *id);
        }
        for f in iface.functions.values() {
            if matches!(
                f.kind,
                FunctionKind::Freestanding | FunctionKind::AsyncFreestanding
            ) {
                render_function(&mut out, resolve, f, "###");
            }
        }
    }
    Ok(out.trim_end().to_owned() + "\n")
}

fn main() -> ExitCode {
    let root = root();
    let command = std::env::args().nth(1);
    let result = match command.as_deref() {
        Some("check") => check(&root).map(|problems| {
            for p in &problems {
                eprintln!("error: {p}");
            }
            problems.is_empty()
        }),
        Some("record") => record(&root).map(|()| true),
        _ => {
            eprintln!("usage: wit-package check | record");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
