//! A small CRI client (what the kubelet says to containerd), over containerd's unix
//! socket with tonic, and the pod and container configs the tests start from.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1;

pub struct Cri {
    rt: tokio::runtime::Runtime,
    pub runtime: RuntimeServiceClient<Channel>,
    pub images: ImageServiceClient<Channel>,
}

pub type CriResult<T> = Result<T, tonic::Status>;

impl Cri {
    /// Connects to the CRI at `sock` (containerd's gRPC socket).
    pub fn connect(sock: &Path) -> Cri {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let sock: PathBuf = sock.to_path_buf();
        let ch = rt
            .block_on(async move {
                // The URI is required by the API and ignored by the connector.
                Endpoint::try_from("http://[::]:50051")?
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let p = sock.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(p).await?,
                            ))
                        }
                    }))
                    .await
            })
            .expect("connecting to the CRI socket");
        Cri {
            rt,
            runtime: RuntimeServiceClient::new(ch.clone()),
            images: ImageServiceClient::new(ch),
        }
    }

    fn wait<T>(&self, f: impl Future<Output = CriResult<tonic::Response<T>>>) -> CriResult<T> {
        self.rt.block_on(f).map(tonic::Response::into_inner)
    }

    pub fn version(&self) -> CriResult<cri::VersionResponse> {
        let mut c = self.runtime.clone();
        self.wait(c.version(cri::VersionRequest {
            version: "v1".into(),
        }))
    }

    /// RunPodSandbox with `handler`; returns the sandbox id.
    pub fn run_pod(&self, config: &cri::PodSandboxConfig, handler: &str) -> CriResult<String> {
        let mut c = self.runtime.clone();
        self.wait(c.run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        }))
        .map(|r| r.pod_sandbox_id)
    }

    pub fn pod_status(&self, id: &str) -> CriResult<cri::PodSandboxStatusResponse> {
        let mut c = self.runtime.clone();
        self.wait(c.pod_sandbox_status(cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: true,
        }))
    }

    pub fn stop_pod(&self, id: &str) -> CriResult<()> {
        let mut c = self.runtime.clone();
        self.wait(c.stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .map(|_| ())
    }

    pub fn remove_pod(&self, id: &str) -> CriResult<()> {
        let mut c = self.runtime.clone();
        self.wait(c.remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        }))
        .map(|_| ())
    }

    /// CreateContainer; returns the container id.
    pub fn create(
        &self,
        pod: &str,
        config: &cri::ContainerConfig,
        pod_config: &cri::PodSandboxConfig,
    ) -> CriResult<String> {
        let mut c = self.runtime.clone();
        self.wait(c.create_container(cri::CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config.clone()),
            sandbox_config: Some(pod_config.clone()),
        }))
        .map(|r| r.container_id)
    }

    pub fn start(&self, id: &str) -> CriResult<()> {
        let mut c = self.runtime.clone();
        self.wait(c.start_container(cri::StartContainerRequest {
            container_id: id.into(),
        }))
        .map(|_| ())
    }

    pub fn status(&self, id: &str) -> CriResult<cri::ContainerStatus> {
        let mut c = self.runtime.clone();
        self.wait(c.container_status(cri::ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        }))
        .map(|r| r.status.unwrap_or_default())
    }

    /// ExecSync; returns (exit code, stdout, stderr).
    pub fn exec(&self, id: &str, cmd: &[&str]) -> CriResult<(i32, String, String)> {
        let mut c = self.runtime.clone();
        self.wait(c.exec_sync(cri::ExecSyncRequest {
            container_id: id.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        }))
        .map(|r| {
            (
                r.exit_code,
                String::from_utf8_lossy(&r.stdout).into_owned(),
                String::from_utf8_lossy(&r.stderr).into_owned(),
            )
        })
    }

    pub fn stats(&self, id: &str) -> CriResult<cri::ContainerStats> {
        let mut c = self.runtime.clone();
        self.wait(c.container_stats(cri::ContainerStatsRequest {
            container_id: id.into(),
        }))
        .map(|r| r.stats.unwrap_or_default())
    }

    pub fn stop(&self, id: &str, timeout: i64) -> CriResult<()> {
        let mut c = self.runtime.clone();
        self.wait(c.stop_container(cri::StopContainerRequest {
            container_id: id.into(),
            timeout,
        }))
        .map(|_| ())
    }

    pub fn remove(&self, id: &str) -> CriResult<()> {
        let mut c = self.runtime.clone();
        self.wait(c.remove_container(cri::RemoveContainerRequest {
            container_id: id.into(),
        }))
        .map(|_| ())
    }

    /// Ids of every pod sandbox containerd knows.
    pub fn pods(&self) -> CriResult<Vec<String>> {
        let mut c = self.runtime.clone();
        self.wait(c.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }))
            .map(|r| r.items.into_iter().map(|p| p.id).collect())
    }
}

fn ns(network: cri::NamespaceMode, pid: cri::NamespaceMode) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: network as i32,
        pid: pid as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// A pod on the host network (no CNI here) with no hostname, its own PID namespace per
/// container (the kubelet's default) and `cgroup_parent`.
pub fn pod_config(name: &str, cgroup_parent: &str) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: String::new(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(ns(
                    cri::NamespaceMode::Node,
                    cri::NamespaceMode::Container,
                )),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Sets the pod's PID namespace mode (POD: every container shares the sandbox's).
pub fn set_pod_pid(pod: &mut cri::PodSandboxConfig, pid: cri::NamespaceMode) {
    if let Some(o) = pod
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        o.pid = pid as i32;
    }
}

/// A container of the busybox test image running `args`, with the namespace options the
/// kubelet derives from `pod`.
pub fn container_config(
    name: &str,
    pod: &cri::PodSandboxConfig,
    args: &[&str],
) -> cri::ContainerConfig {
    let pod_ns = pod
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(cri::ImageSpec {
            image: crate::image::BUSYBOX_TAG.into(),
            ..Default::default()
        }),
        command: args.iter().map(|s| s.to_string()).collect(),
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources::default()),
            security_context: Some(cri::LinuxContainerSecurityContext {
                namespace_options: pod_ns,
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// The container's security context, for edits.
pub fn security(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerSecurityContext {
    c.linux
        .get_or_insert_with(Default::default)
        .security_context
        .get_or_insert_with(Default::default)
}

/// The container's resources, for edits.
pub fn resources(c: &mut cri::ContainerConfig) -> &mut cri::LinuxContainerResources {
    c.linux
        .get_or_insert_with(Default::default)
        .resources
        .get_or_insert_with(Default::default)
}
