//! `spin.toml` (manifest v2) as far as this host needs it: application
//! variables, HTTP triggers, components (source, key-value stores, variables,
//! build command). Unknown keys are rejected, as Spin rejects them, so a typo
//! fails here before it fails on real Spin.

use anyhow::{Context, Result, anyhow, bail, ensure};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// `spin.toml`'s twin that gives each SET a store label of its own
/// (`KvLayout::PerSet`: set0..set9 and users, which a runtime config maps to
/// separate Redis servers): the same text, with every component granted
/// those labels and the `kv_layout` variable defaulting to `sets`.
/// spin.sets.toml is this function's output (a test checks it).
pub fn per_set_manifest(spin_toml: &str) -> String {
    let layout = hongbao::config::KvLayout::PerSet;
    let labels: Vec<String> =
        layout.labels().iter().chain(layout.replica_labels()).map(|label| format!("\"{label}\"")).collect();
    let header = "# GENERATED from spin.toml (hongbao_host::manifest::per_set_manifest): do not edit; a store\n\
                  # label per SET and its replica's (only read). Serve it with a runtime config that defines\n\
                  # every label, e.g.\n\
                  #   spin up -f spin.sets.toml --runtime-config-file runtime-config.sets.toml\n";
    let body = spin_toml
        .replace("key_value_stores = [\"default\"]", &format!("key_value_stores = [{}]", labels.join(", ")))
        .replace("kv_layout = { default = \"single\"", "kv_layout = { default = \"sets\"");
    format!("{header}{body}")
}

#[derive(Debug)]
pub struct Manifest {
    /// The directory holding spin.toml: sources and build commands are relative to it.
    pub dir: PathBuf,
    pub name: String,
    pub variables: BTreeMap<String, Variable>,
    pub triggers: Vec<HttpTrigger>,
    pub components: BTreeMap<String, Component>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    #[serde(default)]
    pub required: bool,
    pub default: Option<String>,
    #[serde(default)]
    pub secret: bool,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HttpTrigger {
    pub route: String,
    pub component: String,
}

#[derive(Debug)]
pub struct Component {
    pub source: PathBuf,
    pub key_value_stores: Vec<String>,
    /// Component variable name → template over application variables.
    pub variables: BTreeMap<String, String>,
    pub build: Option<Build>,
}

#[derive(Debug, Clone)]
pub struct Build {
    pub commands: Vec<String>,
    pub workdir: PathBuf,
}

// The raw TOML shapes: Spin's schema. Fields this host does not use are still
// accepted (and so not "unknown"), which is what `allow(dead_code)` is for.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: u32,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, Variable>,
    #[serde(default)]
    trigger: BTreeMap<String, Vec<RawTrigger>>,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawApplication {
    name: String,
    version: Option<String>,
    description: Option<String>,
    authors: Option<Vec<String>>,
    targets: Option<toml::Value>,
    trigger: Option<toml::Value>,
    tool: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawTrigger {
    id: Option<String>,
    route: Option<toml::Value>,
    component: Option<toml::Value>,
    executor: Option<toml::Value>,
    static_response: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawComponent {
    source: toml::Value,
    description: Option<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    environment: Option<toml::Value>,
    files: Option<toml::Value>,
    exclude_files: Option<toml::Value>,
    allowed_http_hosts: Option<toml::Value>,
    allowed_outbound_hosts: Option<toml::Value>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    sqlite_databases: Option<toml::Value>,
    ai_models: Option<toml::Value>,
    targets: Option<toml::Value>,
    build: Option<RawBuild>,
    tool: Option<toml::Value>,
    dependencies_inherit_configuration: Option<toml::Value>,
    dependencies: Option<toml::Value>,
    profile: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct RawBuild {
    command: toml::Value,
    workdir: Option<String>,
    watch: Option<Vec<String>>,
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        Manifest::parse(&text, dir).with_context(|| format!("in {}", path.display()))
    }

    pub fn parse(text: &str, dir: PathBuf) -> Result<Manifest> {
        let raw: RawManifest = toml::from_str(text)?;
        ensure!(raw.spin_manifest_version == 2, "only spin_manifest_version = 2 is supported");
        for (name, var) in &raw.variables {
            ensure!(
                valid_variable_name(name),
                "variable {name:?}: names are lower snake case, each word starting with a letter"
            );
            ensure!(var.required ^ var.default.is_some(), "variable {name:?} must be `required` OR have a `default`");
        }
        let mut components = BTreeMap::new();
        for (id, c) in raw.component {
            let source = match &c.source {
                toml::Value::String(s) => PathBuf::from(s),
                _ => bail!("component {id}: only local file sources are supported"),
            };
            for template in c.variables.values() {
                for reference in template_references(template)? {
                    ensure!(
                        raw.variables.contains_key(&reference),
                        "component {id}: unknown variable {reference:?} in {template:?}"
                    );
                }
            }
            let build = c
                .build
                .map(|b| -> Result<Build> {
                    let commands = match b.command {
                        toml::Value::String(s) => vec![s],
                        toml::Value::Array(list) => list
                            .into_iter()
                            .map(|v| v.as_str().map(str::to_owned).ok_or_else(|| anyhow!("build commands are strings")))
                            .collect::<Result<_>>()?,
                        _ => bail!("component {id}: build.command is a string or a list of strings"),
                    };
                    Ok(Build { commands, workdir: dir.join(b.workdir.unwrap_or_default()) })
                })
                .transpose()?;
            components
                .insert(id, Component { source, key_value_stores: c.key_value_stores, variables: c.variables, build });
        }
        let mut triggers = Vec::new();
        for (kind, list) in raw.trigger {
            ensure!(kind == "http", "only HTTP triggers are supported (found {kind:?})");
            for t in list {
                ensure!(t.static_response.is_none(), "static_response triggers are not supported");
                let route = match t.route {
                    Some(toml::Value::String(r)) => r,
                    _ => bail!("every HTTP trigger needs a route string (private routes are not supported)"),
                };
                let component = match t.component {
                    Some(toml::Value::String(c)) => c,
                    _ => bail!("trigger {route}: component must name a [component.*] table"),
                };
                ensure!(components.contains_key(&component), "trigger {route}: no component {component:?}");
                triggers.push(HttpTrigger { route, component });
            }
        }
        Ok(Manifest { dir, name: raw.application.name, variables: raw.variables, triggers, components })
    }

    /// Application variable values: `SPIN_VARIABLE_<NAME>` from the
    /// environment (as Spin's default provider reads them), else the default.
    /// Fails naming every required variable left unresolved.
    pub fn resolve_variables(&self, env: impl Fn(&str) -> Option<String>) -> Result<HashMap<String, String>> {
        let mut values = HashMap::new();
        let mut missing = Vec::new();
        for (name, var) in &self.variables {
            match env(&format!("SPIN_VARIABLE_{}", name.to_ascii_uppercase())).or_else(|| var.default.clone()) {
                Some(value) => {
                    values.insert(name.clone(), value);
                }
                None => missing.push(name.clone()),
            }
        }
        ensure!(
            missing.is_empty(),
            "no provider resolved required variable(s): {missing:?} (set SPIN_VARIABLE_<NAME>)"
        );
        Ok(values)
    }

    /// A component's variables, its templates rendered over the application values.
    pub fn component_variables(&self, component: &str, app: &HashMap<String, String>) -> Result<Vec<(String, String)>> {
        let c = self.components.get(component).ok_or_else(|| anyhow!("no component {component}"))?;
        c.variables.iter().map(|(name, template)| Ok((name.clone(), render(template, app)?))).collect()
    }
}

fn valid_variable_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('_').all(|word| {
            word.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && word.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// The variable names a template refers to (`{{ name }}`).
fn template_references(template: &str) -> Result<Vec<String>> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}").ok_or_else(|| anyhow!("unclosed {{{{ in {template:?}"))?;
        names.push(rest[start + 2..start + end].trim().to_owned());
        rest = &rest[start + end + 2..];
    }
    Ok(names)
}

fn render(template: &str, values: &HashMap<String, String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..].find("}}").ok_or_else(|| anyhow!("unclosed {{{{ in {template:?}"))?;
        out.push_str(&rest[..start]);
        let name = rest[start + 2..start + end].trim();
        out.push_str(values.get(name).ok_or_else(|| anyhow!("variable {name} has no value"))?);
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
spin_manifest_version = 2
[application]
name = "demo"
[variables]
secret = { required = true, secret = true }
ttl = { default = "60" }
[[trigger.http]]
route = "/a/:id"
component = "one"
[component.one]
source = "target/one.wasm"
key_value_stores = ["default"]
[component.one.variables]
secret = "{{ secret }}"
mixed = "ttl={{ttl}}s"
[component.one.build]
command = "cargo build"
"#;

    #[test]
    fn parses_and_renders_variables() {
        let m = Manifest::parse(MANIFEST, PathBuf::from("/app")).unwrap();
        assert_eq!(m.name, "demo");
        assert_eq!(m.triggers[0].route, "/a/:id");
        assert_eq!(m.components["one"].build.as_ref().unwrap().workdir, PathBuf::from("/app/"));
        let env = |k: &str| (k == "SPIN_VARIABLE_SECRET").then(|| "s3".to_string());
        let app = m.resolve_variables(env).unwrap();
        assert_eq!(app["ttl"], "60");
        let vars = m.component_variables("one", &app).unwrap();
        assert_eq!(vars, vec![("mixed".to_string(), "ttl=60s".to_string()), ("secret".to_string(), "s3".to_string())]);
    }

    #[test]
    fn environment_overrides_defaults_and_required_must_resolve() {
        let m = Manifest::parse(MANIFEST, PathBuf::from(".")).unwrap();
        let err = m.resolve_variables(|_| None).unwrap_err().to_string();
        assert!(err.contains("secret"), "{err}");
        let app = m.resolve_variables(|k| Some(format!("from {k}"))).unwrap();
        assert_eq!(app["ttl"], "from SPIN_VARIABLE_TTL");
    }

    #[test]
    fn rejects_what_spin_rejects() {
        let typo = MANIFEST.replace("key_value_stores", "key_value_store");
        assert!(Manifest::parse(&typo, PathBuf::new()).is_err());
        let both = MANIFEST.replace("ttl = { default = \"60\" }", "ttl = { default = \"60\", required = true }");
        assert!(Manifest::parse(&both, PathBuf::new()).is_err());
        let unknown_var = MANIFEST.replace("{{ secret }}", "{{ nope }}");
        assert!(Manifest::parse(&unknown_var, PathBuf::new()).is_err());
        let bad_name = MANIFEST.replace("ttl = {", "ttl_2 = {").replace("{{ttl}}", "{{ttl_2}}");
        assert!(Manifest::parse(&bad_name, PathBuf::new()).is_err());
    }
}
