//! Undoing a create that failed part way: whatever it made is taken down again, in the
//! reverse order of making it.

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::state::Container;

/// A container being created: undone entirely if anything fails before `commit`.
pub(super) struct Creating {
    pub(super) container: Option<Container>,
    pub(super) cgroup: Option<crate::linux::cgroups::ContainerCgroup>,
    pub(super) init: Option<Pid>,
    pub(super) gpu: Option<crate::gpu::GpuGrant>,
}

impl Creating {
    pub(super) fn new(container: Container) -> Self {
        Creating {
            container: Some(container),
            cgroup: None,
            init: None,
            gpu: None,
        }
    }

    pub(super) fn container(&self) -> &Container {
        self.container
            .as_ref()
            .expect("the container is set until commit")
    }

    pub(super) fn commit(mut self) -> Container {
        self.cgroup = None;
        self.init = None;
        if let Some(gpu) = self.gpu.take() {
            gpu.keep();
        }
        self.container
            .take()
            .expect("commit is called once, with the container set")
    }
}

impl Drop for Creating {
    fn drop(&mut self) {
        if let Some(pid) = self.init.take() {
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
        }
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.destroy() {
                crate::log::warn(&format!("removing the cgroup of a failed create: {e}"));
            }
        }
        // Releases the lease, if it was written.
        drop(self.gpu.take());
        if let Some(c) = self.container.take() {
            let _ = c.remove();
        }
    }
}
