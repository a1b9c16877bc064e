//! The Kubernetes manifests of `deploy/k8s`, validated offline: `kubectl
//! kustomize` renders them and `kubernetes-validate --strict -k 1.32.0`
//! (from the project's virtualenv, scripts/python-env.sh) checks every
//! resource against the 1.32 schemas, rejecting unknown and missing fields.
//! A deliberately broken manifest must fail the same validator, so the
//! check cannot pass vacuously.
//!
//! Without kubectl or the virtualenv the tests print SKIP and pass, except
//! under CI (`CI` set), where scripts/test.sh provides both and a missing
//! tool is a failure.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use peergrid_e2e::compose::{repo_root, run};

const KUBERNETES_VERSION: &str = "1.32.0";

/// `kubectl` and `kubernetes-validate`, or why the tests cannot run.
fn tools() -> Result<(PathBuf, PathBuf), String> {
    let kubectl = PathBuf::from("kubectl");
    if run(Command::new(&kubectl).args(["version", "--client"]), Duration::from_secs(30)).is_err() {
        return Err("kubectl is not installed".into());
    }
    let venv = std::env::var_os("PEERGRID_VENV").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("PEERGRID_CACHE").map(PathBuf::from).unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/peergrid")
        });
        cache.join("venv")
    });
    let validate = venv.join("bin/kubernetes-validate");
    if !validate.is_file() {
        return Err(format!(
            "{} is missing (make the venv with scripts/python-env.sh)",
            validate.display()
        ));
    }
    Ok((kubectl, validate))
}

/// The tools, or `None` after printing why the calling test is skipped.
fn tools_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    match tools() {
        Ok(t) => Some(t),
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("{test}: {reason} (required under CI)")
        }
        Err(reason) => {
            println!("SKIP {test}: {reason}");
            None
        }
    }
}

fn kustomize(kubectl: &PathBuf) -> String {
    let out = run(
        Command::new(kubectl).arg("kustomize").arg(repo_root().join("deploy/k8s")),
        Duration::from_secs(60),
    )
    .expect("kubectl kustomize deploy/k8s");
    String::from_utf8(out.stdout).expect("UTF-8 manifests")
}

/// `kubernetes-validate --strict -k VERSION -` on `manifests`.
fn validate(validator: &PathBuf, manifests: &str) -> Output {
    let mut child = Command::new(validator)
        .args(["--strict", "-k", KUBERNETES_VERSION, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start kubernetes-validate");
    child.stdin.take().expect("piped").write_all(manifests.as_bytes()).expect("feed manifests");
    child.wait_with_output().expect("kubernetes-validate output")
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn k8s_manifests_validate_strictly_against_kubernetes_1_32() {
    let Some((kubectl, validator)) = tools_or_skip("k8s manifests") else { return };
    let manifests = kustomize(&kubectl);
    let out = validate(&validator, &manifests);
    assert!(out.status.success(), "deploy/k8s does not validate:\n{}", text(&out));
    // Every resource the deploy needs was rendered and validated.
    let report = text(&out);
    for resource in [
        "namespace/peergrid",
        "configmap/peergrid-config",
        "secret/peergrid-tokens",
        "service/market-node",
        "deployment/market-node",
        "service/trainer",
        "statefulset/trainer",
        "deployment/agent-node",
        "horizontalpodautoscaler/agent-node",
    ] {
        assert!(
            report.contains(&format!("passed for resource {resource} ")),
            "{resource} not validated:\n{report}"
        );
    }
}

#[test]
fn k8s_manifests_use_grpc_probes_a_pvc_and_an_autoscaling_v2_hpa() {
    let Some((kubectl, _)) = tools_or_skip("k8s manifest shape") else { return };
    let manifests = kustomize(&kubectl);
    for needle in [
        "apiVersion: autoscaling/v2",
        "volumeClaimTemplates:",
        "clusterIP: None",
        "service: peergrid.market.v1.MarketService",
        "service: peergrid.learner.v1.LearnerService",
        "secretName: peergrid-tokens",
        "name: peergrid-config",
        "namespace: peergrid",
    ] {
        assert!(manifests.contains(needle), "rendered manifests lack '{needle}'");
    }
    // The market's and the trainer's probes are native gRPC probes.
    assert!(
        manifests.matches("grpc:\n").count() >= 5,
        "expected gRPC probes on market-node and trainer:\n{manifests}"
    );
}

#[test]
fn the_validator_rejects_unknown_and_missing_fields() {
    let Some((kubectl, validator)) = tools_or_skip("k8s validator self-check") else { return };
    let manifests = kustomize(&kubectl);
    // An unknown field in the agent-node Deployment's spec.
    let unknown = manifests.replacen("  replicas: 2\n", "  replicas: 2\n  replicaz: 2\n", 1);
    assert_ne!(unknown, manifests, "the agent-node Deployment no longer has 'replicas: 2'");
    let out = validate(&validator, &unknown);
    assert!(!out.status.success(), "an unknown field passed validation:\n{}", text(&out));
    assert!(text(&out).contains("replicaz"), "{}", text(&out));
    // A Service port without its required `port`.
    let missing = "apiVersion: v1\nkind: Service\nmetadata:\n  name: broken\nspec:\n  ports:\n    - name: grpc\n";
    let out = validate(&validator, missing);
    assert!(!out.status.success(), "a missing required field passed validation:\n{}", text(&out));
    assert!(text(&out).contains("'port' is a required property"), "{}", text(&out));
}
