//! A containerd with both test images in `k8s.io` and a CRI client: the setup of every
//! Kubernetes-path test, and the checks that a removed pod leaves nothing behind.

use crate::containerd::{Containerd, HANDLER, K8S_NS};
use crate::cri::{self, v1, Cri};
use crate::{can_run, image, leftovers, unique};

pub struct CriEnv {
    pub c: Containerd,
    pub cri: Cri,
    /// The pods' cgroup parent, `/<unique>`.
    pub parent: String,
    _images: tempfile::TempDir,
}

/// Starts containerd (with `gpurun_toml` added to gpurun's configuration), imports the
/// images, connects; `None` (after saying why) when the test cannot run here.
pub fn setup(gpurun_toml: &str) -> Option<CriEnv> {
    setup_with(gpurun_toml, None)
}

/// As [`setup`]; with `install`, the `gpurun` handler comes from the drop-in that
/// `install` writes into the prepared containerd's `conf.d` (see
/// [`Containerd::prepare`]) before containerd starts.
pub fn setup_with(gpurun_toml: &str, install: Option<&dyn Fn(&Containerd)>) -> Option<CriEnv> {
    if !can_run(&["containerd", "ctr", "containerd-shim-runc-v2", "cc"]) {
        return None;
    }
    let images = tempfile::tempdir().expect("temporary directory");
    let (pause, busybox) = image::build_all(images.path()).expect("test images");
    let mut c = Containerd::prepare(gpurun_toml, install.is_some());
    if let Some(f) = install {
        f(&c);
    }
    c.launch();
    c.import(K8S_NS, &pause);
    c.import(K8S_NS, &busybox);
    let parent = format!("/{}", unique("gpurun-it-pods"));
    c.own_cgroup(&parent);
    let cri = Cri::connect(&c.sock);
    Some(CriEnv {
        c,
        cri,
        parent,
        _images: images,
    })
}

impl CriEnv {
    pub fn pod_config(&self, name: &str) -> v1::PodSandboxConfig {
        cri::pod_config(name, &self.parent)
    }

    /// Runs a sandbox with handler `gpurun` and checks gpurun holds it.
    pub fn run_pod(&self, cfg: &v1::PodSandboxConfig) -> String {
        let pod = self.cri.run_pod(cfg, HANDLER).expect("RunPodSandbox");
        let st = self
            .c
            .gpurun_state(K8S_NS, &pod)
            .expect("gpurun state of the sandbox");
        assert_eq!(st["status"], "running", "{st}");
        pod
    }

    pub fn start_container(
        &self,
        pod: &str,
        pod_cfg: &v1::PodSandboxConfig,
        cfg: &v1::ContainerConfig,
    ) -> String {
        let id = self.cri.create(pod, cfg, pod_cfg).expect("CreateContainer");
        self.cri.start(&id).expect("StartContainer");
        id
    }

    /// ExecSync that must succeed; returns stdout.
    pub fn sh(&self, id: &str, script: &str) -> String {
        let (code, out, err) = self.cri.exec(id, &["sh", "-c", script]).expect("ExecSync");
        assert_eq!(code, 0, "{script}: stdout {out:?} stderr {err:?}");
        out
    }

    pub fn assert_gone(&self, id: &str) {
        leftovers::assert_gone(
            "CRI",
            &self.c.runtime_root(K8S_NS),
            id,
            &format!("{}/{id}", self.parent),
            self.c.dir(),
        );
    }

    /// StopContainer + RemoveContainer, then nothing of it is left.
    pub fn remove_container(&self, id: &str) {
        self.cri.stop(id, 5).expect("StopContainer");
        self.cri.remove(id).expect("RemoveContainer");
        self.assert_gone(id);
    }

    /// StopPodSandbox + RemovePodSandbox, then nothing of it (or of any container) is left.
    pub fn remove_pod(&self, pod: &str) {
        self.cri.stop_pod(pod).expect("StopPodSandbox");
        self.cri.remove_pod(pod).expect("RemovePodSandbox");
        self.assert_gone(pod);
        assert!(self.cri.pods().expect("ListPodSandbox").is_empty());
        let left = leftovers::entries(&self.c.runtime_root(K8S_NS));
        assert!(left.is_empty(), "gpurun state left: {left:?}");
        let m = leftovers::mounts_under(self.c.dir());
        assert!(m.is_empty(), "mounts left: {m:?}");
    }
}
