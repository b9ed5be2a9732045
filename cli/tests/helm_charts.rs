//! The Helm charts: their generated files match their source, both lint, and what they render
//! (cluster-wide and namespaced) passes `kubeconform -strict` against the pinned apiserver's
//! schemas and is accepted by that apiserver with strict field validation and Pod Security
//! `restricted`, without a warning. Bad values are refused.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nsh_testenv::{ControlPlane, repo_root};

fn chart(name: &str) -> PathBuf {
    repo_root().join("charts").join(name)
}

fn nsh() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nsh"))
}

fn run(command: &mut Command) -> (bool, String, String) {
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// `helm template` of `chart` as release `nsh-mesh` in `namespace`, with `--set` values.
fn template(plane: &ControlPlane, chart_name: &str, namespace: &str, sets: &[&str]) -> String {
    let mut helm = plane.helm();
    helm.args(["template", "nsh-mesh"])
        .arg(chart(chart_name))
        .args(["--namespace", namespace])
        .args(["--kube-version", nsh_testenv::versions::kubernetes()]);
    for set in sets {
        helm.args(["--set", set]);
    }
    let (ok, out, err) = run(&mut helm);
    assert!(ok, "helm template {chart_name} {sets:?}: {err}");
    out
}

/// Server-side dry run of `yaml` with strict field validation; returns kubectl's stderr.
fn dry_run(plane: &ControlPlane, yaml: &str) -> String {
    let mut kubectl = plane
        .kubectl()
        .args(["apply", "--dry-run=server", "--validate=strict", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    kubectl
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let output = kubectl.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "the apiserver refused it: {stderr}\n{yaml}"
    );
    stderr
}

fn same_files(generated: &Path, committed: &Path) {
    let names = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    assert_eq!(
        names(generated),
        names(committed),
        "{}",
        committed.display()
    );
    for name in names(committed) {
        assert_eq!(
            std::fs::read_to_string(generated.join(&name)).unwrap(),
            std::fs::read_to_string(committed.join(&name)).unwrap(),
            "{} drifted: run `nsh operator crds --helm --out charts/nsh-mesh-crds/templates`",
            committed.join(&name).display()
        );
    }
}

#[test]
fn generated_chart_files_match_their_source() {
    let (ok, rules, err) = run(nsh().args(["operator", "rbac", "--rules-only"]));
    assert!(ok, "{err}");
    assert_eq!(
        rules,
        std::fs::read_to_string(chart("nsh-mesh").join("files/operator-rules.yaml")).unwrap(),
        "charts/nsh-mesh/files/operator-rules.yaml drifted: run `nsh operator rbac --rules-only > charts/nsh-mesh/files/operator-rules.yaml`"
    );
    let out = tempfile::tempdir().unwrap();
    let (ok, _, err) = run(nsh()
        .args(["operator", "crds", "--helm", "--out"])
        .arg(out.path()));
    assert!(ok, "{err}");
    same_files(out.path(), &chart("nsh-mesh-crds").join("templates"));
}

#[tokio::test]
async fn the_charts_render_what_the_apiserver_accepts_under_restricted_pod_security() {
    let plane = ControlPlane::shared().await.unwrap();
    for name in ["nsh-mesh", "nsh-mesh-crds"] {
        let (ok, out, err) = run(plane.helm().args(["lint", "--strict"]).arg(chart(name)));
        assert!(ok, "helm lint {name}: {out}{err}");
    }
    // The CRDs first: the chart's optional MeshServer is one of their kinds.
    let crds = template(plane, "nsh-mesh-crds", "default", &[]);
    assert_eq!(crds.matches("helm.sh/resource-policy: keep").count(), 4);
    assert!(
        !template(plane, "nsh-mesh-crds", "default", &["keep=false"]).contains("resource-policy")
    );
    plane.install_crds(&repo_root().join("crds")).await.unwrap();

    let release = plane.namespace("chart").await.unwrap();
    let (team_a, team_b) = (
        plane.namespace("chart-a").await.unwrap(),
        plane.namespace("chart-b").await.unwrap(),
    );
    for namespace in [&release, &team_a, &team_b] {
        let (ok, _, err) = run(plane
            .kubectl()
            .args(["label", "namespace", namespace])
            .args([
                "pod-security.kubernetes.io/enforce=restricted",
                "pod-security.kubernetes.io/warn=restricted",
            ]));
        assert!(ok, "{err}");
    }
    // The control: a Deployment that breaks `restricted` does get the warning.
    let control = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: control, namespace: {release}}}\nspec: {{selector: {{matchLabels: {{a: b}}}}, template: {{metadata: {{labels: {{a: b}}}}, spec: {{containers: [{{name: c, image: x}}]}}}}}}\n"
    );
    assert!(
        dry_run(plane, &control).contains("would violate PodSecurity \"restricted"),
        "the apiserver warns about pods that break restricted"
    );
    // kubeconform's schemas, from the pinned apiserver (with our CRDs) by the repo's converter.
    let schemas = tempfile::tempdir().unwrap();
    let (ok, openapi, err) = run(plane.kubectl().args(["get", "--raw", "/openapi/v2"]));
    assert!(ok, "{err}");
    let mut convert = Command::new("python3")
        .arg(repo_root().join("scripts/k8s-json-schemas.py"))
        .arg(schemas.path())
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    convert
        .stdin
        .take()
        .unwrap()
        .write_all(openapi.as_bytes())
        .unwrap();
    assert!(convert.wait().unwrap().success());
    let location = format!(
        "{}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        schemas.path().display()
    );
    let kubeconform = |yaml: &str| {
        let mut child = Command::new(nsh_testenv::kubeconform().unwrap())
            .args(["-strict", "-summary", "-schema-location", &location, "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(yaml.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    let (ok, report) = kubeconform(&crds);
    assert!(
        ok && report.contains("Valid: 4, Invalid: 0, Errors: 0"),
        "{report}"
    );
    // The control: a misspelt field is refused.
    let (ok, report) =
        kubeconform("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {portz: []}\n");
    assert!(!ok && report.contains("portz"), "{report}");

    let watch = format!("watchNamespaces={{{team_a},{team_b}}}");
    for sets in [
        vec![
            "defaultMeshServer.enabled=true",
            "podDisruptionBudget.enabled=true",
        ],
        vec![watch.as_str()],
    ] {
        let yaml = template(plane, "nsh-mesh", &release, &sets);
        let (ok, report) = kubeconform(&yaml);
        assert!(
            ok && report.contains("Invalid: 0, Errors: 0, Skipped: 0"),
            "{sets:?}: {report}"
        );
        let warnings = dry_run(plane, &yaml);
        assert!(!warnings.contains("Warning"), "{sets:?}: {warnings}");
        if sets[0].starts_with("watchNamespaces") {
            assert!(
                !yaml.contains("kind: ClusterRole"),
                "namespaced: no ClusterRole"
            );
            for namespace in [&team_a, &team_b] {
                assert!(
                    yaml.contains(&format!("namespace: {namespace}")),
                    "a Role in {namespace}"
                );
            }
            assert!(yaml.contains(&format!("--watch-namespace={team_a},{team_b}")));
        } else {
            assert!(yaml.contains("kind: ClusterRole\n"));
            assert!(yaml.contains("kind: MeshServer"));
        }
    }
}

#[tokio::test]
async fn bad_values_are_refused_naming_the_value() {
    let plane = ControlPlane::shared().await.unwrap();
    for (set, named) in [
        ("replicaCount=none", "/replicaCount"),
        ("imageRegistr=mirror.example", "imageRegistr"),
        ("image.digest=sha256:short", "/image/digest"),
        ("logFormat=xml", "/logFormat"),
    ] {
        let (ok, _, err) = run(plane
            .helm()
            .args(["template", "x"])
            .arg(chart("nsh-mesh"))
            .args([
                "--kube-version",
                nsh_testenv::versions::kubernetes(),
                "--set",
                set,
            ]));
        assert!(!ok, "{set} was accepted");
        assert!(err.contains(named), "{set}: {err}");
    }
}
