//! The combining rule (runtime-spec/gpu.md): how the explicit grants of one create —
//! engine-applied nodes, CDI annotations, device-plugin mounts, `--gpus` — and the image's
//! `NVIDIA_VISIBLE_DEVICES` come together.

use super::request::{DeviceId, Request, RequestSource};
use super::GpuError;

/// One explicit grant of a create (engine-applied nodes, CDI annotations, device-plugin
/// mounts, `--gpus`), as the combining rule sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explicit {
    /// How a refusal names it (`--gpus 0`, `the cdi.k8s.io annotations nvidia.com/gpu=1`).
    pub what: String,
    /// UUIDs of the GPUs it names (a MIG device counts as its parent), in any order.
    pub gpus: Vec<String>,
}

/// The combining rule of runtime-spec/gpu.md. `explicit` holds the explicit grants,
/// strongest first (applied nodes, then CDI annotations or device-plugin mounts, then
/// `--gpus`): grants naming the same GPUs are one grant, the first of them acted on;
/// grants naming other GPUs are refused, naming both. `env` is the image's
/// `NVIDIA_VISIBLE_DEVICES`: beside an explicit grant it is ignored, and the returned
/// warning says so.
pub fn combine(explicit: &[Explicit], env: Option<&str>) -> Result<Option<String>, GpuError> {
    let set = |e: &Explicit| {
        let mut v: Vec<String> = e.gpus.iter().map(|g| g.to_ascii_lowercase()).collect();
        v.sort();
        v.dedup();
        v
    };
    if let Some(first) = explicit.first() {
        for other in &explicit[1..] {
            if set(first) != set(other) {
                let list = |e: &Explicit| {
                    if e.gpus.is_empty() {
                        "none".to_string()
                    } else {
                        e.gpus.join(",")
                    }
                };
                return Err(GpuError::RequestConflict {
                    first: first.what.clone(),
                    first_gpus: list(first),
                    second: other.what.clone(),
                    second_gpus: list(other),
                });
            }
        }
    }
    let env = env.map(str::trim).filter(|v| !v.is_empty() && *v != "void");
    Ok(match (explicit.first(), env) {
        (Some(first), Some(v)) => Some(format!(
            "[gpu-env-ignored] NVIDIA_VISIBLE_DEVICES={v} from the image ignored: {} decides the GPUs",
            first.what
        )),
        _ => None,
    })
}

/// How a conflict names a request from this source.
fn label(source: RequestSource) -> &'static str {
    match source {
        RequestSource::CdiAnnotations => "the cdi.k8s.io/ annotations",
        RequestSource::DevicePluginMounts => "the device-plugin mounts",
        RequestSource::Env | RequestSource::EnvIgnored => "NVIDIA_VISIBLE_DEVICES",
        RequestSource::Applied => "the NVIDIA nodes applied by the engine",
        RequestSource::Cli => "--gpus",
    }
}

/// How a conflict names `req`: its source and the names it used.
pub fn describe(req: &Request) -> String {
    let names: Vec<String> = req
        .devices
        .iter()
        .filter_map(|d| match d {
            DeviceId::All => Some("all".into()),
            DeviceId::Index(i) => Some(i.to_string()),
            DeviceId::GpuUuid(u) | DeviceId::MigUuid(u) | DeviceId::Cdi(u) => Some(u.clone()),
            DeviceId::MigIndex(g, m) => Some(format!("{g}:{m}")),
            DeviceId::Bus(b) => Some(b.to_string()),
            DeviceId::ImexChannel(_) | DeviceId::ImexAll => None,
        })
        .collect();
    format!("{} {}", label(req.source), names.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn explicit(what: &str, gpus: &[&str]) -> Explicit {
        Explicit {
            what: what.into(),
            gpus: gpus.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn explicit_grants_combine_when_they_name_the_same_gpus_and_conflict_otherwise() {
        let applied = explicit("the applied nodes", &["GPU-A", "GPU-B"]);
        let same = explicit("--gpus 0,1", &["gpu-b", "GPU-A"]);
        assert_eq!(
            combine(&[applied.clone(), same], None).expect("same GPUs"),
            None
        );
        let e = combine(&[applied.clone(), explicit("--gpus 1", &["GPU-B"])], None)
            .expect_err("other GPUs");
        assert_eq!(e.code(), crate::gpu::reason::REQUEST_CONFLICT);
        let msg = e.to_string();
        assert!(
            msg.contains("the applied nodes")
                && msg.contains("--gpus 1")
                && msg.contains("GPU-A,GPU-B"),
            "{msg}"
        );
        let w = combine(std::slice::from_ref(&applied), Some("all")).expect("env beside a grant");
        assert!(w.is_some_and(|w| w.contains("NVIDIA_VISIBLE_DEVICES=all")));
        assert_eq!(combine(&[applied], Some("void")).expect("void"), None);
        assert_eq!(combine(&[], Some("all")).expect("env alone"), None);
    }
}
